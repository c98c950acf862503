//! Decoding the connection ledger's socket records ([`EventKind::Sock`]): the
//! operation, the peer of a connect, and the captured prefix of a transfer.
//!
//! [`EventKind::Sock`]: profiler_common::EventKind
use profiler_common::{sock_op, EventHeader, SockEvent};

use super::decode::DecodeError;
use crate::events::{SockOp, SockRecord};

/// A socket record: its operation and, for transfers, the captured prefix.
pub(super) fn decode_sock(
    header: &EventHeader,
    ev: &SockEvent,
    prefix: &[u8],
) -> Result<SockRecord, DecodeError> {
    let len = u64::try_from(ev.ret).unwrap_or(0);
    let (fd, op) = match ev.op {
        sock_op::ACCEPT => (
            i32::try_from(ev.ret).unwrap_or(-1),
            SockOp::Accept { listener_fd: ev.fd },
        ),
        sock_op::CONNECT => (
            ev.fd,
            SockOp::Connect {
                peer: sockaddr(&ev.addr),
            },
        ),
        sock_op::READ => (
            ev.fd,
            SockOp::Read {
                len,
                prefix: prefix.to_vec(),
            },
        ),
        sock_op::WRITE => (
            ev.fd,
            SockOp::Write {
                len,
                prefix: prefix.to_vec(),
            },
        ),
        sock_op::CLOSE => {
            let c = profiler_common::SockCounted::from_addr(&ev.addr);
            let counted = (c != Default::default()).then(|| c.into());
            (
                ev.fd,
                SockOp::Close {
                    counted,
                    exchanges: None,
                },
            )
        }
        sock_op::CLOSE_EXCHANGES => (
            ev.fd,
            SockOp::Close {
                counted: None,
                exchanges: Some(profiler_common::ExchangeClose::from_addr(&ev.addr).into()),
            },
        ),
        other => return Err(DecodeError::UnknownSockOp(other)),
    };
    Ok(SockRecord {
        pid: header.tgid,
        tid: header.tid,
        time_ns: header.ktime_ns,
        fd,
        op,
    })
}

/// The peer of a `sockaddr_in` or `sockaddr_in6` (its first 24 bytes); None for other
/// families (a unix socket's path is not kept).
pub fn sockaddr(raw: &[u8; 24]) -> Option<std::net::SocketAddr> {
    const AF_INET: u16 = 2;
    const AF_INET6: u16 = 10;
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    let port = u16::from_be_bytes([raw[2], raw[3]]);
    match family {
        AF_INET => {
            let ip = std::net::Ipv4Addr::new(raw[4], raw[5], raw[6], raw[7]);
            Some(std::net::SocketAddr::new(ip.into(), port))
        }
        AF_INET6 => {
            let octets: [u8; 16] = raw[8..24].try_into().ok()?;
            let v6 = std::net::Ipv6Addr::from(octets);
            let ip = v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4);
            Some(std::net::SocketAddr::new(ip, port))
        }
        _ => None,
    }
}
