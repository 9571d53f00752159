use std::io::Write;

use clap::Parser;

fn main() {
    let args = kubectl_hatch::Args::parse();
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
