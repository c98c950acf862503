//! Naming what a file descriptor is: sockets and their peers, from `/proc/PID/fd` and
//! `/proc/PID/net/{tcp,tcp6,udp,udp6,unix}`, so a report can say
//! "waiting on 127.0.0.1:5432" rather than "fd 7".
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

/// A socket found in /proc/PID/net.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketInfo {
    pub inode: u64,
    pub proto: &'static str,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// TCP state number (1 = ESTABLISHED, 10 = LISTEN), 0 when not TCP.
    pub state: u8,
    /// Bytes received and not yet read by the application.
    pub rx_queue: u64,
    /// Unix socket path, if any.
    pub path: Option<String>,
}

impl SocketInfo {
    /// How a person names the socket: the peer for connected sockets, the local
    /// address for listeners, the path for unix sockets.
    pub fn label(&self) -> String {
        const LISTEN: u8 = 10;
        match (self.proto, self.remote, self.local) {
            ("unix", ..) => format!("unix {}", self.path.as_deref().unwrap_or("(unnamed)")),
            (_, _, Some(local)) if self.state == LISTEN => {
                format!("{} listening {local}", self.proto)
            }
            (_, Some(remote), _) if !remote.ip().is_unspecified() => remote.to_string(),
            (_, _, Some(local)) => format!("{} {local}", self.proto),
            _ => format!("{} socket", self.proto),
        }
    }
}

/// Parse one `/proc/net/tcp`-style table (tcp, tcp6, udp, udp6).
pub fn parse_inet_table(text: &str, proto: &'static str) -> Vec<SocketInfo> {
    text.lines()
        .skip(1)
        .filter_map(|line| parse_inet_line(line, proto))
        .collect()
}

fn parse_inet_line(line: &str, proto: &'static str) -> Option<SocketInfo> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 {
        return None;
    }
    let (_, rx) = f[4].split_once(':')?;
    Some(SocketInfo {
        inode: f[9].parse().ok()?,
        proto,
        local: parse_hex_addr(f[1]),
        remote: parse_hex_addr(f[2]),
        state: u8::from_str_radix(f[3], 16).ok()?,
        rx_queue: u64::from_str_radix(rx, 16).ok()?,
        path: None,
    })
}

/// `0100007F:1538` → 127.0.0.1:5432; IPv6 addresses are four little-endian words.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.swap_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parse `/proc/net/unix`.
pub fn parse_unix_table(text: &str) -> Vec<SocketInfo> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(SocketInfo {
                inode: f.get(6)?.parse().ok()?,
                proto: "unix",
                local: None,
                remote: None,
                state: 0,
                rx_queue: 0,
                path: f.get(7).map(|p| p.to_string()),
            })
        })
        .collect()
}

/// The inode of a socket fd target (`socket:[12345]`), from `readlink /proc/PID/fd/N`.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The sockets visible in a process's network namespace, by inode.
pub fn read_sockets(pid: u32) -> HashMap<u64, SocketInfo> {
    let mut all = HashMap::new();
    for (file, proto) in [
        ("tcp", "tcp"),
        ("tcp6", "tcp"),
        ("udp", "udp"),
        ("udp6", "udp"),
    ] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
            all.extend(
                parse_inet_table(&text, proto)
                    .into_iter()
                    .map(|s| (s.inode, s)),
            );
        }
    }
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/unix")) {
        all.extend(parse_unix_table(&text).into_iter().map(|s| (s.inode, s)));
    }
    all
}

/// The inodes of the sockets process `pid` holds open (its /proc/PID/fd links).
pub fn socket_inodes(pid: u32) -> std::collections::BTreeSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Default::default();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|link| socket_inode(&link.to_string_lossy()))
        .collect()
}

/// The socket descriptors of process `pid` with their inodes.
pub fn socket_fds(pid: u32) -> Vec<(i32, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            Some((fd, socket_inode(&link.to_string_lossy())?))
        })
        .collect()
}

/// What fd `fd` of `pid` refers to (`socket:[…]`, `pipe:[…]`, a path), if readable.
pub fn fd_target(pid: u32, fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// File descriptors an epoll instance watches (`tfd:` lines of /proc/PID/fdinfo/EPFD).
pub fn epoll_fds(pid: u32, epfd: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{epfd}"))
        .map(|text| parse_epoll_fdinfo(&text))
        .unwrap_or_default()
}

pub fn parse_epoll_fdinfo(text: &str) -> Vec<i32> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("tfd:"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Check that IPv4 and IPv6 rows of /proc/net/tcp parse with peer, state and queue.
    #[test]
    fn parses_tcp_tables() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:9C40 0100007F:1538 01 00000000:0000002A 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1\n";
        let s = &parse_inet_table(v4, "tcp")[0];
        assert_eq!(s.inode, 4242);
        assert_eq!(s.remote, Some("127.0.0.1:5432".parse().unwrap()));
        assert_eq!(s.local, Some("127.0.0.1:40000".parse().unwrap()));
        assert_eq!(s.rx_queue, 42);
        assert_eq!(s.label(), "127.0.0.1:5432");
        let v6 = "header\n   0: 00000000000000000000000001000000:1538 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   106        0 77 1\n";
        let s = &parse_inet_table(v6, "tcp")[0];
        assert_eq!(s.local, Some("[::1]:5432".parse().unwrap()));
        assert_eq!(s.label(), "tcp listening [::1]:5432");
    }

    /// Check that socket links, unix tables and epoll fdinfo parse; garbage is skipped.
    #[test]
    fn parses_links_unix_and_epoll() {
        assert_eq!(socket_inode("socket:[123]"), Some(123));
        assert_eq!(socket_inode("pipe:[123]"), None);
        let unix = "Num RefCount Protocol Flags Type St Inode Path\n0000: 00000002 00000000 00010000 0001 01 555 /run/pg.sock\ngarbage\n";
        let u = parse_unix_table(unix);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].label(), "unix /run/pg.sock");
        let info = "pos:\t0\nflags:\t02\nmnt_id:\t15\ntfd:        5 events:       19 data:                5  pos:0 ino:1a sdev:8\ntfd:        7 events:       19 data:                7  pos:0 ino:1b sdev:8\n";
        assert_eq!(parse_epoll_fdinfo(info), vec![5, 7]);
        assert!(parse_inet_table("header\nnonsense line\n", "tcp").is_empty());
    }
}
