//! The workload shim (being built): PID 1 of the workload container.
