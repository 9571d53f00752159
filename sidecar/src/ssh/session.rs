//! What SSH channels ask for, independent of how processes are spawned.

use russh::Sig;

/// What a channel asked to run.
pub enum Launch {
    /// `shell`: the user's login shell.
    Shell,
    /// `exec`: a command line for the user's shell.
    Exec(String),
    /// `subsystem sftp`: Hatchway's SFTP server, run inside the workload.
    Sftp,
}

/// A pty's size and terminal type.
#[derive(Clone, Debug)]
pub struct PtySize {
    pub term: String,
    pub cols: u16,
    pub rows: u16,
}

/// Requests for a running process.
pub enum Control {
    Resize { cols: u16, rows: u16 },
    Signal(i32),
}

/// The signal number for an SSH signal name.
pub fn signal_number(sig: &Sig) -> Option<i32> {
    Some(match sig {
        Sig::ABRT => libc::SIGABRT,
        Sig::ALRM => libc::SIGALRM,
        Sig::FPE => libc::SIGFPE,
        Sig::HUP => libc::SIGHUP,
        Sig::ILL => libc::SIGILL,
        Sig::INT => libc::SIGINT,
        Sig::KILL => libc::SIGKILL,
        Sig::PIPE => libc::SIGPIPE,
        Sig::QUIT => libc::SIGQUIT,
        Sig::SEGV => libc::SIGSEGV,
        Sig::TERM => libc::SIGTERM,
        Sig::USR1 => libc::SIGUSR1,
        _ => return None,
    })
}

pub fn ssh_signal(number: i32) -> Sig {
    match number {
        libc::SIGABRT => Sig::ABRT,
        libc::SIGALRM => Sig::ALRM,
        libc::SIGFPE => Sig::FPE,
        libc::SIGHUP => Sig::HUP,
        libc::SIGILL => Sig::ILL,
        libc::SIGINT => Sig::INT,
        libc::SIGKILL => Sig::KILL,
        libc::SIGPIPE => Sig::PIPE,
        libc::SIGQUIT => Sig::QUIT,
        libc::SIGSEGV => Sig::SEGV,
        libc::SIGTERM => Sig::TERM,
        libc::SIGUSR1 => Sig::USR1,
        other => Sig::Custom(format!("SIG{other}")),
    }
}

/// Watches input for the detach key sequence.
pub struct Detach {
    keys: Vec<u8>,
    matched: usize,
}

impl Detach {
    pub fn new(keys: &[u8]) -> Self {
        Self {
            keys: keys.to_vec(),
            matched: 0,
        }
    }

    /// Returns the bytes to pass on and whether the sequence completed.
    /// Bytes that might start the sequence are held back until it is clear
    /// they do not, then passed on.
    pub fn feed(&mut self, data: &[u8]) -> (Vec<u8>, bool) {
        // The common case, bulk input with no key in it, stays a memchr and
        // a memcpy: a per-byte loop here capped uploads (scp, cat >).
        if self.keys.is_empty() || (self.matched == 0 && !data.contains(&self.keys[0])) {
            return (data.to_vec(), false);
        }
        let mut pass = Vec::with_capacity(data.len());
        for &b in data {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (pass, true);
                }
            } else {
                pass.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if b == self.keys[0] {
                    self.matched = 1;
                } else {
                    pass.push(b);
                }
            }
        }
        (pass, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_end_the_session_and_are_not_passed_on() {
        let mut d = Detach::new(&[0x1d, 0x1d]);
        assert_eq!(d.feed(b"ls\r"), (b"ls\r".to_vec(), false));
        assert_eq!(d.feed(&[0x1d]), (vec![], false));
        assert_eq!(d.feed(b"x"), (vec![0x1d, b'x'], false));
        assert_eq!(d.feed(&[b'a', 0x1d, 0x1d, b'b']), (vec![b'a'], true));
        let mut none = Detach::new(&[]);
        assert_eq!(none.feed(&[0x1d, 0x1d]), (vec![0x1d, 0x1d], false));
    }

    #[test]
    fn signals_map_both_ways() {
        for sig in [Sig::INT, Sig::TERM, Sig::KILL, Sig::HUP, Sig::USR1] {
            let n = signal_number(&sig).unwrap();
            assert_eq!(format!("{:?}", ssh_signal(n)), format!("{sig:?}"));
        }
    }
}
