//! Why an SFTP request fails, and the status code each failure gets (as
//! OpenSSH's sftp-server maps errno values).

use std::io;

use russh_sftp::protocol::StatusCode;
use russh_sftp::server::StatusReply;

use super::MAX_HANDLES;

/// Why a request failed; each maps to an SFTP status code.
#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    /// The filesystem refused.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Nothing more to read from a file or directory.
    #[error("end of file")]
    Eof,
    /// The handle was never opened, or is already closed.
    #[error("no open file or directory has the handle {0:?}")]
    NoSuchHandle(String),
    /// A file handle where a directory handle is needed, or the reverse.
    #[error("the handle {handle:?} is not an open {wanted}")]
    WrongHandle {
        /// The handle.
        handle: String,
        /// "file" or "directory".
        wanted: &'static str,
    },
    /// [`MAX_HANDLES`] are open already.
    #[error("too many open files and directories ({MAX_HANDLES}): close some first")]
    TooManyHandles,
    /// The request's data could not be parsed.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// A request or extension this server does not implement.
    #[error("{0} is not supported")]
    Unsupported(String),
}

impl SftpError {
    /// The status code the client gets for this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            SftpError::Io(error) => status_for_io(error),
            SftpError::Eof => StatusCode::Eof,
            SftpError::NoSuchHandle(_) | SftpError::WrongHandle { .. } | SftpError::TooManyHandles => {
                StatusCode::Failure
            }
            SftpError::Malformed(_) => StatusCode::BadMessage,
            SftpError::Unsupported(_) => StatusCode::OpUnsupported,
        }
    }
}

impl From<SftpError> for StatusReply {
    fn from(error: SftpError) -> Self {
        let code = error.status_code();
        // The status code alone says "end of file" better than a message.
        if code == StatusCode::Eof {
            return StatusReply::new(code);
        }
        code.with_message(error.to_string())
    }
}

/// The status code for a filesystem error, the way OpenSSH's sftp-server
/// maps errno values (clients act on these codes: e.g. "No such file" makes
/// `sftp` report a missing file rather than a generic failure).
pub fn status_for_io(error: &io::Error) -> StatusCode {
    if let Some(errno) = error.raw_os_error() {
        return match errno {
            libc::ENOENT | libc::ENOTDIR | libc::EBADF | libc::ELOOP => StatusCode::NoSuchFile,
            libc::EPERM | libc::EACCES | libc::EFAULT => StatusCode::PermissionDenied,
            libc::ENAMETOOLONG | libc::EINVAL => StatusCode::BadMessage,
            libc::ENOSYS | libc::EOPNOTSUPP => StatusCode::OpUnsupported,
            _ => StatusCode::Failure,
        };
    }
    match error.kind() {
        io::ErrorKind::NotFound => StatusCode::NoSuchFile,
        io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        io::ErrorKind::InvalidInput => StatusCode::BadMessage,
        io::ErrorKind::Unsupported => StatusCode::OpUnsupported,
        io::ErrorKind::UnexpectedEof => StatusCode::Eof,
        _ => StatusCode::Failure,
    }
}
