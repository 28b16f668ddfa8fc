//! The SDK's one error type: what went wrong, naming the variable, file or peer.

use std::path::PathBuf;

/// A result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug)]
pub enum Error {
    /// A setting (environment variable) is missing or its value is wrong.
    Config { var: String, why: String },
    /// A file (a secret, a config file, a state file) could not be read or written.
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A network exchange failed (`what`: with whom and what).
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A peer spoke HTTP wrongly, or answered a status the caller refuses.
    Http(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Config { var, why } => write!(f, "{var}: {why}"),
            Error::File { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Http(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::File { source, .. } | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    /// An I/O error, said with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
