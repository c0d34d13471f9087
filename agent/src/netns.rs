//! Network namespaces other than the agent's (a container's): a handle opened from
//! a process's `/proc/PID/ns/net`, entered only for the moment a socket is created.
//!
//! A socket belongs to the namespace it was created in for its whole life, so the
//! agent's listener in a container and its upstream connections from there are
//! created inside (the thread enters with setns(2) and leaves again at once) and
//! then driven by the normal event loops like any other socket. Istio's ztunnel
//! serves pods the same way.
use std::{
    fs::File,
    io,
    net::SocketAddr,
    os::fd::{AsFd as _, AsRawFd as _},
    os::unix::fs::MetadataExt as _,
};

/// A network namespace, kept alive by its open handle.
#[derive(Debug)]
pub struct Netns {
    file: File,
    /// Inode of the namespace (what `ls -l /proc/PID/ns/net` and `ip netns
    /// identify` show).
    pub inode: u64,
    /// The kernel's cookie for it, as the eBPF programs see it.
    pub cookie: u64,
}

thread_local! {
    /// The namespace this thread runs in when it is not visiting another one.
    static HOME: io::Result<File> = File::open("/proc/thread-self/ns/net");
}

/// The inode of a process's network namespace, without opening it.
pub fn inode_of(pid: u32) -> io::Result<u64> {
    Ok(std::fs::metadata(format!("/proc/{pid}/ns/net"))?.ino())
}

/// The inode of the calling thread's network namespace.
pub fn current_inode() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

impl Netns {
    /// The network namespace of process `pid`.
    pub fn of_pid(pid: u32) -> io::Result<Self> {
        let file = File::open(format!("/proc/{pid}/ns/net"))?;
        let inode = file.metadata()?.ino();
        let mut netns = Self {
            file,
            inode,
            cookie: 0,
        };
        netns.cookie = netns
            .run_in(crate::capture::current_netns_cookie)?
            .map_err(io::Error::other)?;
        Ok(netns)
    }

    /// Runs `f` on this thread inside the namespace, then returns to the thread's
    /// own. `f` must not yield to other work (it runs synchronously): whatever it
    /// creates belongs to this namespace.
    pub fn run_in<T>(&self, f: impl FnOnce() -> T) -> io::Result<T> {
        HOME.with(|home| {
            let home = home.as_ref().map_err(|e| io::Error::new(e.kind(), e.to_string()))?;
            setns(&self.file)?;
            let out = f();
            if let Err(e) = setns(home) {
                // Everything this thread did next would happen in the wrong namespace.
                // Exiting detaches the eBPF programs: captured connections go direct.
                tracing::error!(error = %e, "cannot return to the agent's network namespace: exiting");
                std::process::abort();
            }
            Ok(out)
        })
    }

    /// A non-blocking TCP socket for `addr`'s family, created inside the namespace.
    pub fn socket_for(&self, addr: SocketAddr) -> io::Result<socket2::Socket> {
        self.run_in(|| new_socket(addr))?
    }
}

fn setns(file: &File) -> io::Result<()> {
    // SAFETY: setns on a namespace fd we hold; affects only the calling thread.
    if unsafe { libc::setns(file.as_fd().as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn new_socket(addr: SocketAddr) -> io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    Ok(socket)
}

/// Whether a plain bind (no SO_REUSEPORT, which would share the port silently with
/// whoever listens there) of `addr` succeeds, in `netns` (or this thread's own):
/// `AddrInUse` when someone holds it.
pub fn ensure_free(netns: Option<&Netns>, addr: SocketAddr) -> io::Result<()> {
    let socket = match netns {
        Some(n) => n.socket_for(addr)?,
        None => new_socket(addr)?,
    };
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())
}

/// A listening socket on `addr`, in `netns` (or this thread's own), shared with
/// the other workers' listeners (SO_REUSEPORT).
pub fn bind_listener(netns: Option<&Netns>, addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = match netns {
        Some(n) => n.socket_for(addr)?,
        None => new_socket(addr)?,
    };
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    // Deep backlog: connection bursts arrive all at once.
    socket.listen(4096)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_namespace_is_entered_and_left() {
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let own = Netns::of_pid(std::process::id()).unwrap();
        assert_eq!(own.inode, current_inode().unwrap());
        assert_eq!(own.cookie, crate::capture::current_netns_cookie().unwrap());
        let inside = own.run_in(|| current_inode().unwrap()).unwrap();
        assert_eq!(inside, own.inode);
        let listener = bind_listener(Some(&own), "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        std::net::TcpStream::connect(addr).unwrap();
    }
}
