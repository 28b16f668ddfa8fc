//! A host resolver of the test's own: a DNS server on a loopback address (as systemd-resolved's
//! stub on 127.0.0.53, which a pod's namespace cannot reach), and the `/etc` files that make a
//! process started by the test use it — in a mount namespace of that process's own, so the
//! host's files are never changed.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub(crate) struct FakeDns {
    pub addr: Ipv4Addr,
    dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeDns {
    /// Answers `A` queries for `names` (name -> address); every other name is NXDOMAIN.
    pub(crate) fn start(names: &[(&str, Ipv4Addr)]) -> FakeDns {
        Self::with_hosts(names, &[])
    }

    /// [`FakeDns::start`], with `hosts` (name -> address) in its `/etc/hosts` too.
    pub(crate) fn with_hosts(names: &[(&str, Ipv4Addr)], hosts: &[(&str, Ipv4Addr)]) -> FakeDns {
        // A loopback address of the test's own (port 53 of 127.0.0.1 may be the host's); another
        // one when a test running beside it took that one.
        let (addr, sock) = (0..50)
            .find_map(|_| {
                let h = u32::from_str_radix(&super::unique(""), 16).unwrap();
                let addr = Ipv4Addr::new(127, 53, (h >> 8) as u8, h as u8);
                UdpSocket::bind((addr, 53)).ok().map(|s| (addr, s))
            })
            .expect("bind the test's DNS server");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let names: BTreeMap<String, Ipv4Addr> =
            names.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stopped.load(Ordering::Acquire) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&buf[..n], &names) {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("resolv.conf"),
            format!("nameserver {addr}\noptions timeout:2 attempts:2\n"),
        )
        .unwrap();
        let mut hosts_file = String::from("127.0.0.1 localhost\n");
        for (name, ip) in hosts {
            hosts_file += &format!("{ip} {name}\n");
        }
        std::fs::write(dir.path().join("hosts"), hosts_file).unwrap();
        std::fs::write(dir.path().join("nsswitch.conf"), "hosts: files dns\n").unwrap();
        FakeDns {
            addr,
            dir,
            stop,
            thread: Some(thread),
        }
    }

    /// Makes `c` run with this resolver: a mount namespace of its own (private: nothing of it
    /// reaches the host's) with `/etc/resolv.conf`, `/etc/hosts` and `/etc/nsswitch.conf` bound
    /// over. Pod pins made by such a process are in its namespace only: use it for `peapod run`.
    pub(crate) fn use_in(&self, c: &mut Command) {
        use std::os::unix::process::CommandExt;
        let c_str = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let binds: Vec<(CString, CString)> = ["resolv.conf", "hosts", "nsswitch.conf"]
            .iter()
            .map(|f| {
                (
                    c_str(&self.dir.path().join(f)),
                    c_str(&Path::new("/etc").join(f)),
                )
            })
            .collect();
        let root = CString::new("/").unwrap();
        // SAFETY: between fork and exec only unshare(2) and mount(2), on strings made before.
        unsafe {
            c.pre_exec(move || {
                let check = |r: libc::c_int| {
                    if r == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                };
                check(libc::unshare(libc::CLONE_NEWNS))?;
                check(libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                for (from, to) in &binds {
                    check(libc::mount(
                        from.as_ptr(),
                        to.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ))?;
                }
                Ok(())
            });
        }
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reply to one DNS query: the question echoed, one `A` record if the name is known and
/// `A` was asked, NXDOMAIN if the name is unknown. `None` for what is not a query.
fn answer(q: &[u8], names: &BTreeMap<String, Ipv4Addr>) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question = &q[12..i + 4];
    let known = names.get(&labels.join("."));
    let mut r = Vec::new();
    r.extend_from_slice(&q[..2]);
    // QR, the query's RD, RA; RCODE 3 (NXDOMAIN) for unknown names.
    r.push(0x80 | (q[2] & 0x01));
    r.push(if known.is_some() { 0x80 } else { 0x83 });
    let records = u16::from(known.is_some() && qtype == 1);
    for n in [1, records, 0, 0] {
        r.extend_from_slice(&u16::to_be_bytes(n));
    }
    r.extend_from_slice(question);
    if let (Some(ip), 1) = (known, records) {
        // The name (a pointer to the question's), A, IN, TTL 5 s, 4 bytes of address.
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
        r.extend_from_slice(&ip.octets());
    }
    Some(r)
}
