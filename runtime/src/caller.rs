//! Who asks: the daemon's own user, root (the pods directory's files), or the peer of an API
//! connection (`SO_PEERCRED`). What a caller may do is decided where it asks (files read with
//! its rights, host files for root only, quotas for users other than root).

/// Who asks for a file: the daemon's own user, or the peer of an API connection
/// (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The peer's process, to read its supplementary groups (0: none known).
    pub pid: i32,
}

impl Caller {
    /// This process.
    pub fn myself() -> Caller {
        Caller {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            pid: std::process::id() as i32,
        }
    }

    /// Root, as the owner of the pods directory's files.
    pub fn root() -> Caller {
        Caller {
            uid: 0,
            gid: 0,
            pid: 0,
        }
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}
