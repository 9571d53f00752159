use super::*;
use std::time::UNIX_EPOCH;

/// A hybrid host (v1 controllers, cgroup2 at /sys/fs/cgroup/unified), no
/// cgroup namespace: paths are full hierarchy paths, mounts show the root.
const HYBRID_CGROUP: &str = "\
12:pids:/kubepods/pod1/ctr
4:memory:/kubepods/pod1/ctr
3:blkio:/kubepods/pod1/ctr
2:cpu,cpuacct:/kubepods/pod1/ctr
1:name=systemd:/kubepods/pod1/ctr
0::/kubepods/pod1/ctr
";
const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
";

#[test]
fn v1_controllers_are_found_below_their_mount_points() {
    let cgroups = discover(HYBRID_CGROUP, HYBRID_MOUNTINFO);
    assert_eq!(
        cgroups.v1["cpuacct"],
        vec![
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/ctr"),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")
        ]
    );
    assert_eq!(
        cgroups.v1["memory"][0],
        PathBuf::from("/sys/fs/cgroup/memory/kubepods/pod1/ctr")
    );
    assert_eq!(
        cgroups.v1["blkio"][0],
        PathBuf::from("/sys/fs/cgroup/blkio/kubepods/pod1/ctr")
    );
    assert!(
        !cgroups.v1.contains_key("pids"),
        "a controller without a mount is skipped"
    );
    assert_eq!(
        cgroups.v2[0],
        PathBuf::from("/sys/fs/cgroup/unified/kubepods/pod1/ctr")
    );
}

#[test]
fn a_container_that_sees_its_own_cgroup_as_the_mount_root_uses_the_mount_point() {
    // Docker/containerd without a cgroup namespace: the mount shows only
    // the container's cgroup, and mountinfo's root field says which.
    let mountinfo = "\
35 31 0:32 /kubepods/pod1/ctr /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
";
    let cgroups = discover("4:memory:/kubepods/pod1/ctr\n", mountinfo);
    assert_eq!(cgroups.v1["memory"], vec![PathBuf::from("/sys/fs/cgroup/memory")]);
}

#[test]
fn pure_v2_with_a_cgroup_namespace_reads_the_mount_point() {
    let mountinfo = "\
1234 1200 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate,memory_recursiveprot
";
    let cgroups = discover("0::/\n", mountinfo);
    assert!(cgroups.v1.is_empty());
    assert_eq!(cgroups.v2, vec![PathBuf::from("/sys/fs/cgroup")]);
}

#[test]
fn mount_points_with_escaped_spaces_are_decoded() {
    let mountinfo = "35 31 0:32 / /sys/fs/my\\040cgroups rw - cgroup cgroup rw,memory\n";
    let cgroups = discover("4:memory:/\n", mountinfo);
    assert_eq!(cgroups.v1["memory"], vec![PathBuf::from("/sys/fs/my cgroups")]);
}

#[test]
fn cpu_v1_is_read_from_cpuacct_usage_and_stat() {
    let cpu = parse_cpu_v1(Some("1234500000\n"), Some("user 100\nsystem 23\n")).unwrap();
    assert_eq!(
        cpu,
        Cpu {
            total: 1.2345,
            user: Some(1.0),
            sys: Some(0.23)
        }
    );
    let without_usage = parse_cpu_v1(None, Some("user 100\nsystem 50\n")).unwrap();
    assert_eq!(without_usage.total, 1.5);
    assert_eq!(parse_cpu_v1(None, None), None);
}

#[test]
fn cpu_v2_is_read_from_cpu_stat_in_microseconds() {
    let stat = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 0\n";
    assert_eq!(
        parse_cpu_v2(stat),
        Some(Cpu {
            total: 2.5,
            user: Some(2.0),
            sys: Some(0.5)
        })
    );
    assert_eq!(parse_cpu_v2("nr_periods 0\n"), None);
}

#[test]
fn memory_v1_prefers_the_hierarchical_totals() {
    let stat = "cache 100\nrss 200\nrss_huge 0\ntotal_cache 1100\ntotal_rss 1200\n";
    assert_eq!(
        parse_memory_v1(Some("5000\n"), Some(stat)),
        Some(Memory {
            usage: Some(5000),
            rss: Some(1200),
            cache: Some(1100)
        })
    );
    assert_eq!(
        parse_memory_v1(None, Some("cache 7\nrss 8\n")),
        Some(Memory {
            usage: None,
            rss: Some(8),
            cache: Some(7)
        })
    );
    assert_eq!(parse_memory_v1(None, None), None);
}

#[test]
fn memory_v2_maps_anon_and_file_to_rss_and_cache() {
    let stat = "anon 4096\nfile 8192\nkernel 12\nshmem 0\n";
    assert_eq!(
        parse_memory_v2(Some("16384\n"), Some(stat)),
        Some(Memory {
            usage: Some(16384),
            rss: Some(4096),
            cache: Some(8192)
        })
    );
}

#[test]
fn io_v1_sums_reads_and_writes_over_devices() {
    let text = "8:0 Read 100\n8:0 Write 200\n8:0 Sync 300\n8:0 Async 0\n8:0 Total 300\n\
                8:16 Read 1\n8:16 Write 2\nTotal 303\n";
    assert_eq!(
        parse_io_v1(text),
        Io {
            read: 101,
            write: 202
        }
    );
    assert_eq!(parse_io_v1("Total 0\n"), Io::default());
}

#[test]
fn io_v2_sums_rbytes_and_wbytes_over_devices() {
    let text = "8:0 rbytes=1000 wbytes=2000 rios=3 wios=4 dbytes=0 dios=0\n\
                259:0 rbytes=10 wbytes=20 rios=1 wios=1 dbytes=0 dios=0\n";
    assert_eq!(
        parse_io_v2(text),
        Io {
            read: 1010,
            write: 2020
        }
    );
}

#[test]
fn a_line_has_the_documented_format() {
    let at = UNIX_EPOCH + Duration::from_secs(1_795_438_800); // 2026-11-23T13:00:00Z
    let sample = Sample {
        cpu: Some(Cpu {
            total: 1.2345,
            user: Some(1.0),
            sys: Some(0.2345),
        }),
        mem: Some(Memory {
            usage: Some(20_000_000),
            rss: Some(12_345_678),
            cache: Some(4567),
        }),
        io: Some(Io {
            read: 123,
            write: 456,
        }),
    };
    assert_eq!(
        format_line(at, &sample),
        "2026-11-23T13:00:00Z cpu 1.2345 user 1.0000 sys 0.2345 mem usage 20000000 rss 12345678 cache 4567 io read 123 write 456\n"
    );
    let partial = Sample {
        mem: Some(Memory {
            usage: Some(1),
            ..Memory::default()
        }),
        ..Sample::default()
    };
    assert_eq!(format_line(at, &partial), "2026-11-23T13:00:00Z mem usage 1\n");
}

#[test]
fn timestamps_are_utc_calendar_dates() {
    assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(
        format_utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
        "2000-02-29T00:00:00Z"
    );
    assert_eq!(
        format_utc(UNIX_EPOCH + Duration::from_secs(4_107_542_399)),
        "2100-02-28T23:59:59Z"
    );
}

#[test]
fn directories_are_resolved_to_the_first_candidate_holding_the_files() {
    let root = tempfile::tempdir().unwrap();
    let mount = root.path().join("memory");
    std::fs::create_dir_all(&mount).unwrap();
    std::fs::write(mount.join("memory.usage_in_bytes"), "42\n").unwrap();
    let mut cgroups = Cgroups::default();
    // The deeper candidate does not exist here: fall back to the mount point.
    cgroups
        .v1
        .insert("memory".into(), vec![mount.join("not/here"), mount.clone()]);
    let sources = Sources::resolve(&cgroups);
    assert_eq!(
        sources.sample().mem,
        Some(Memory {
            usage: Some(42),
            rss: None,
            cache: None
        })
    );
}

#[test]
fn this_machines_cgroup_yields_real_values() {
    let sources = Sources::for_self();
    if sources.is_empty() {
        eprintln!("no cgroup is mounted on this machine: nothing to read");
        return;
    }
    let sample = sources.sample();
    eprintln!("{}", format_line(SystemTime::now(), &sample));
    let cpu = sample.cpu.expect("a machine with cgroups accounts CPU time");
    assert!(cpu.total > 0.0, "this very test used CPU time");
    let mem = sample.mem.expect("a machine with cgroups accounts memory");
    assert!(
        mem.usage.or(mem.rss).unwrap_or(0) > 0,
        "this very test uses memory"
    );
}
