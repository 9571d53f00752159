use std::io::Write;

use clap::Parser as _;

fn main() {
    let args = match kubectl_hatch::Args::try_parse() {
        Ok(args) => args,
        // --help and --version print and succeed; a usage error has its
        // own exit code, never one a refusal uses.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            let _ = e.print();
            std::process::exit(kubectl_hatch::EXIT_USAGE);
        }
    };
    // Not `stdout().lock()`: connect-ssh writes stdout from another thread.
    let code = match kubectl_hatch::run(args, &mut std::io::stdout()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kubectl-hatch: {e:#}");
            1
        }
    };
    let _ = std::io::stdout().flush();
    // Exit at once: a blocking stdin read (connect-ssh) must not hold the
    // process after the router closed the stream.
    std::process::exit(code);
}
