//! The requests verdict: requests that pile up unanswered while the process answers
//! others, and the outbound pool whose every connection stays silent.
//!
//! An event loop hung on promises blocks no thread: it sleeps in `epoll_wait`, CPU is
//! near zero and the health check answers. What shows the hang is the requests: new
//! ones are read and never answered, on routes that got no answer since. Attached late
//! (the usual case) the probes never saw the pool's connections begin their
//! transactions, but every one of them stays silent for the whole window, which a
//! working pool under load never does.
//!
//! A route is stalled when at least [`MIN_STUCK`] of its requests that arrived after its
//! last answer have waited past the threshold: no request of that route was answered
//! for at least the threshold while they piled up. Requests answered before the hang
//! formed (a profiler running before it) do not hide it. A busy healthy server answers
//! every route; an idle one has no requests in flight; a few slow requests are fewer
//! than [`MIN_STUCK`] or see their route answered after they arrived.
use std::collections::BTreeMap;

use super::ledger::RequestLedger;
use crate::{
    analyze::frames,
    events::StackId,
    model::{ConnRole, ListenerRequests, PeerPool, RequestStall, TxOrigin},
};

/// Requests past the threshold on one route before it can be called stalled.
pub const MIN_STUCK: usize = 3;

/// Per listener: its requests in flight, oldest, answers and series, at `now_ns`.
pub fn listeners(ledger: &RequestLedger, now_ns: u64) -> Vec<ListenerRequests> {
    ledger
        .ports()
        .into_iter()
        .map(|port| {
            let pending: Vec<u64> = ledger.in_flight(port).map(|p| p.start_ns).collect();
            ListenerRequests {
                port,
                in_flight: pending.len(),
                oldest_ns: pending
                    .iter()
                    .min()
                    .map_or(0, |s| now_ns.saturating_sub(*s)),
                answered: ledger
                    .answers
                    .iter()
                    .filter(|((p, _), _)| *p == port)
                    .map(|(_, a)| a.count)
                    .sum(),
                in_flight_series: ledger.series.get(&port).cloned().unwrap_or_default(),
            }
        })
        .collect()
}

/// Per outbound peer: connections open, silent for the whole window, in transaction,
/// and the code that began the open transactions (`names`: a stack's frames, root
/// first).
pub fn peers(
    ledger: &RequestLedger,
    now_ns: u64,
    names: impl Fn(StackId) -> Vec<String>,
) -> Vec<PeerPool> {
    let mut by_peer: BTreeMap<&str, PeerPool> = BTreeMap::new();
    let mut origins: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for c in ledger.conns.values() {
        let Some(ConnRole::Outbound { peer }) = &c.role else {
            continue;
        };
        let p = by_peer.entry(peer).or_insert_with(|| PeerPool {
            peer: peer.clone(),
            protocol: None,
            open: 0,
            silent: 0,
            in_transaction: 0,
            in_transaction_ns: 0,
            in_transaction_least_ns: 0,
            begun_under: Vec::new(),
        });
        p.open += 1;
        if c.protocol.is_some() {
            p.protocol.clone_from(&c.protocol);
        }
        let silent = c.seen_open
            && c.last_activity_ns
                .is_none_or(|t| t < ledger.window_start_ns);
        p.silent += usize::from(silent);
        if let Some((_, since)) = c.tx.filter(|(s, _)| matches!(s, 'T' | 'E')) {
            let age = now_ns.saturating_sub(since);
            p.in_transaction_least_ns = if p.in_transaction == 0 {
                age
            } else {
                p.in_transaction_least_ns.min(age)
            };
            p.in_transaction += 1;
            p.in_transaction_ns = p.in_transaction_ns.max(age);
            if let Some(stack) = c.begun_under {
                if let Some(function) = frames::transaction_owner(&names(stack.id)) {
                    *origins
                        .entry(peer)
                        .or_default()
                        .entry(function.to_string())
                        .or_default() += 1;
                }
            }
        }
    }
    for (peer, functions) in origins {
        if let Some(p) = by_peer.get_mut(peer) {
            p.begun_under = functions
                .into_iter()
                .map(|(function, connections)| TxOrigin {
                    function,
                    connections,
                })
                .collect();
            p.begun_under.sort_by(|a, b| {
                b.connections
                    .cmp(&a.connections)
                    .then(a.function.cmp(&b.function))
            });
        }
    }
    by_peer.into_values().collect()
}

/// Judge the process's requests at `now_ns`: Some when requests pile up unanswered.
/// The pool clause names a peer whose every connection stayed silent for the window
/// (attached late) or has been in a transaction since before the threshold (the probes
/// saw them begin).
pub fn judge(
    ledger: &RequestLedger,
    now_ns: u64,
    threshold_ns: u64,
    names: impl Fn(StackId) -> Vec<String>,
) -> Option<RequestStall> {
    let mut best: Option<(u16, Vec<String>, usize)> = None;
    for port in ledger.ports() {
        // Per route: its requests past the threshold that arrived after the route's
        // last answer. Any such request means no answer for at least the threshold.
        let mut stuck: BTreeMap<&str, usize> = BTreeMap::new();
        for p in ledger.in_flight(port) {
            let last_answer = ledger
                .answers
                .get(&(port, Some(p.route.clone())))
                .and_then(|a| a.last_ns);
            let entry = stuck.entry(p.route.as_str()).or_insert(0);
            if now_ns.saturating_sub(p.start_ns) >= threshold_ns
                && last_answer.is_none_or(|last| last < p.start_ns)
            {
                *entry += 1;
            }
        }
        let stalled: Vec<String> = stuck
            .iter()
            .filter(|(_, stuck)| **stuck >= MIN_STUCK)
            .map(|(route, _)| (*route).to_string())
            .collect();
        let count = ledger
            .in_flight(port)
            .filter(|p| stalled.contains(&p.route))
            .count();
        if !stalled.is_empty() && best.as_ref().is_none_or(|b| count > b.2) {
            best = Some((port, stalled, count));
        }
    }
    let (port, routes, unanswered) = best?;
    let oldest = ledger
        .in_flight(port)
        .filter(|p| routes.contains(&p.route))
        .map(|p| p.start_ns)
        .min()
        .unwrap_or(now_ns);
    let window_ns = now_ns.saturating_sub(ledger.window_start_ns);
    let last_answer = routes
        .iter()
        .filter_map(|r| ledger.answers.get(&(port, Some(r.clone())))?.last_ns)
        .max();
    let while_answered = ledger
        .answers
        .iter()
        .filter(|((p, route), a)| {
            a.count > 0 && !(*p == port && route.as_ref().is_some_and(|r| routes.contains(r)))
        })
        .max_by_key(|(_, a)| a.count)
        .map(|((p, route), a)| {
            let label = match route {
                _ if *p != port => format!(":{p}"),
                Some(r) => format!("{r} on :{p}"),
                None => format!("other requests on :{p}"),
            };
            (label, a.count)
        });
    let unit = unit(ledger, port, &routes);
    let pool = peers(ledger, now_ns, names)
        .into_iter()
        .filter(|p| {
            p.open >= 2
                && (p.silent == p.open
                    || p.in_transaction == p.open && p.in_transaction_least_ns >= threshold_ns)
        })
        .max_by_key(|p| (p.protocol.as_deref() == Some("postgres"), p.open));
    Some(RequestStall {
        port,
        routes,
        unanswered,
        unit,
        oldest_ns: now_ns.saturating_sub(oldest),
        none_answered_ns: last_answer.map_or(window_ns, |t| now_ns.saturating_sub(t)),
        while_answered,
        pool,
        window_ns,
    })
}

/// What one unanswered request is: a gRPC stream, an HTTP/2 stream or a request.
fn unit(ledger: &RequestLedger, port: u16, routes: &[String]) -> String {
    let http2 = ledger
        .conns
        .values()
        .filter(|c| c.role == Some(ConnRole::Inbound { port }))
        .any(|c| c.protocol.as_deref() == Some("http2"));
    let grpc = routes.iter().all(|r| {
        let mut parts = r.trim_start_matches('/').split('/');
        r.starts_with('/')
            && parts.next().is_some_and(|s| s.contains('.'))
            && parts.next().is_some_and(|m| !m.is_empty())
            && parts.next().is_none()
    });
    match (http2, grpc) {
        (true, true) => "gRPC streams",
        (true, false) => "HTTP/2 streams",
        _ => "requests",
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConnEvent;

    const S: u64 = 1_000_000_000;
    const PG: &str = "127.0.0.1:5432";

    fn no_names(_: StackId) -> Vec<String> {
        Vec::new()
    }

    /// A server on :3000 with a health route, and `pool` PostgreSQL connections open
    /// since before the window (window from 10 s to 20 s).
    fn server(pool: i32) -> RequestLedger {
        let mut l = RequestLedger::default();
        for fd in 0..pool {
            l.apply(
                100 + fd,
                0,
                &ConnEvent::Opened {
                    role: ConnRole::Outbound { peer: PG.into() },
                    seen_open: true,
                },
            );
        }
        l.new_window(10 * S);
        l
    }

    fn request(l: &mut RequestLedger, fd: i32, t: u64, route: &str) {
        l.apply(
            fd,
            t,
            &ConnEvent::Opened {
                role: ConnRole::Inbound { port: 3000 },
                seen_open: false,
            },
        );
        l.apply(
            fd,
            t,
            &ConnEvent::Protocol {
                name: "http1".into(),
            },
        );
        l.apply(
            fd,
            t,
            &ConnEvent::Request {
                stream: 0,
                route: route.into(),
            },
        );
    }

    fn answer(l: &mut RequestLedger, fd: i32, t: u64) {
        l.apply(fd, t, &ConnEvent::Answered { stream: 0 });
        l.apply(fd, t, &ConnEvent::Closed);
    }

    /// Check the hung server: orders read and never answered while the health check is,
    /// every pool connection silent: STALLED naming the pool.
    #[test]
    fn hung_server_is_stalled_with_its_pool() {
        let mut l = server(10);
        for i in 0..20 {
            request(&mut l, i, 10 * S + i as u64 * S / 4, "POST /orders");
        }
        for i in 0..8 {
            let t = 10 * S + i * S;
            request(&mut l, 50, t, "GET /health");
            answer(&mut l, 50, t + 1000);
        }
        let v = judge(&l, 20 * S, S, no_names).expect("stalled");
        assert_eq!((v.port, v.unanswered), (3000, 20));
        assert_eq!(v.routes, vec!["POST /orders".to_string()]);
        assert_eq!(v.unit, "requests");
        assert_eq!(v.oldest_ns, 10 * S);
        assert_eq!(v.none_answered_ns, 10 * S);
        assert_eq!(
            v.while_answered,
            Some(("GET /health on :3000".to_string(), 8))
        );
        let pool = v.pool.expect("pool");
        assert_eq!((pool.peer.as_str(), pool.open, pool.silent), (PG, 10, 10));
    }

    /// Check the hang as a profiler running before it saw it: every pool connection
    /// began its transaction (the kernel sent the stacks that wrote `BEGIN`) and has
    /// waited in it since: the pool clause names the function that began them; one
    /// connection whose transaction began under another function is counted apart;
    /// a transaction that ended forgets its stack.
    #[test]
    fn transactions_seen_begun_name_their_function() {
        use crate::model::StackRef;
        let names = |id: StackId| match id {
            1 => vec![
                "JS:insertOrder /srv/app/orders.js:63".to_string(),
                "JS:query /srv/app/node_modules/pg/lib/client.js:520".to_string(),
                "write".to_string(),
            ],
            _ => vec![
                "main".to_string(),
                "refund".to_string(),
                "write".to_string(),
            ],
        };
        let mut l = server(10);
        for fd in 100..110 {
            let t = 11 * S + (fd - 100) as u64 * S / 100;
            let begun = |l: &mut RequestLedger, t: u64, stack: u32| {
                l.apply(
                    fd,
                    t,
                    &ConnEvent::Protocol {
                        name: "postgres".into(),
                    },
                );
                l.apply(
                    fd,
                    t,
                    &ConnEvent::Query {
                        keyword: "BEGIN".into(),
                    },
                );
                l.apply(
                    fd,
                    t,
                    &ConnEvent::TransactionBegun {
                        stack: StackRef {
                            id: stack,
                            truncated: false,
                        },
                    },
                );
                l.apply(
                    fd,
                    t,
                    &ConnEvent::Bytes {
                        read: 0,
                        written: 30,
                    },
                );
                l.apply(fd, t + 1000, &ConnEvent::Ready { status: 'T' });
            };
            // An earlier transaction under `refund`, committed: forgotten.
            begun(&mut l, t - S / 2, 2);
            l.apply(fd, t - S / 4, &ConnEvent::Ready { status: 'I' });
            begun(&mut l, t, if fd == 109 { 2 } else { 1 });
        }
        for i in 0..5 {
            request(&mut l, i, 11 * S + i as u64 * S / 10, "POST /orders");
        }
        let v = judge(&l, 20 * S, S, names).expect("stalled");
        let pool = v.pool.expect("a pool in transaction");
        assert_eq!((pool.open, pool.silent, pool.in_transaction), (10, 0, 10));
        assert!(pool.in_transaction_least_ns >= 8 * S);
        let origins: Vec<(&str, usize)> = pool
            .begun_under
            .iter()
            .map(|o| (o.function.as_str(), o.connections))
            .collect();
        assert_eq!(
            origins,
            vec![("JS:insertOrder /srv/app/orders.js:63", 9), ("refund", 1)]
        );
        // Transactions younger than the threshold are no pool clause: a busy pool.
        assert_eq!(judge(&l, 20 * S, 12 * S, names).and_then(|v| v.pool), None);
    }

    /// Check a hang that formed during the window: orders answered at first, then a
    /// burst in which one more was answered after the first of the burst arrived, then
    /// only new orders that wait. STALLED; the same with the late orders answered is not.
    #[test]
    fn hang_formed_in_the_window_is_stalled() {
        let mut l = server(0);
        for i in 0..5 {
            let t = 10 * S + i * S / 10;
            request(&mut l, 200 + i as i32, t, "POST /orders");
            answer(&mut l, 200 + i as i32, t + S / 20);
        }
        for i in 0..10 {
            request(&mut l, i, 11 * S + i as u64 * 1000, "POST /orders");
        }
        // One order of the burst is still answered, after the burst's first arrived.
        l.apply(0, 11 * S + S / 10, &ConnEvent::Answered { stream: 0 });
        l.apply(0, 11 * S + S / 10, &ConnEvent::Closed);
        assert_eq!(judge(&l, 20 * S, S, no_names), None, "only the burst");
        let mut late = l.clone();
        for i in 0..4 {
            request(&mut late, 20 + i, 12 * S + i as u64 * S, "POST /orders");
        }
        let v = judge(&late, 20 * S, S, no_names).expect("stalled");
        assert_eq!(v.unanswered, 13);
        assert_eq!(v.none_answered_ns, 9 * S - S / 10);
        for i in 0..4 {
            answer(&mut late, 20 + i, 19 * S + i as u64);
        }
        assert_eq!(judge(&late, 20 * S, S, no_names), None, "answered again");
    }

    /// Check the healthy twin under the same load: every order answered, the pool busy:
    /// not stalled, and its pool is not silent.
    #[test]
    fn busy_healthy_server_is_not_stalled() {
        let mut l = server(10);
        for i in 0..200 {
            let t = 10 * S + i as u64 * S / 20;
            request(&mut l, i, t, "POST /orders");
            l.apply(
                100 + i % 10,
                t,
                &ConnEvent::Bytes {
                    read: 0,
                    written: 60,
                },
            );
            if i < 196 {
                answer(&mut l, i, t + S / 5);
            }
        }
        assert_eq!(judge(&l, 20 * S, S, no_names), None);
        assert!(peers(&l, 20 * S, no_names).iter().all(|p| p.silent == 0));
    }

    /// Check an idle server (no requests at all) and a server with a few slow requests
    /// while the same route is answered: not stalled.
    #[test]
    fn idle_and_few_slow_are_not_stalled() {
        let l = server(10);
        assert_eq!(judge(&l, 20 * S, S, no_names), None);
        let mut l = server(10);
        for i in 0..2 {
            request(&mut l, i, 11 * S, "GET /report");
        }
        assert_eq!(judge(&l, 20 * S, S, no_names), None, "two slow requests");
        let mut l = server(10);
        for i in 0..5 {
            request(&mut l, i, 11 * S, "GET /report");
        }
        request(&mut l, 9, 12 * S, "GET /report");
        answer(&mut l, 9, 15 * S);
        assert_eq!(judge(&l, 20 * S, S, no_names), None, "slow but answered");
    }

    /// Check that gRPC requests count streams, not connections, and name the method.
    #[test]
    fn grpc_counts_streams() {
        let mut l = server(0);
        l.apply(
            7,
            0,
            &ConnEvent::Opened {
                role: ConnRole::Inbound { port: 50051 },
                seen_open: true,
            },
        );
        l.apply(
            7,
            0,
            &ConnEvent::Protocol {
                name: "http2".into(),
            },
        );
        for id in 0..12 {
            l.apply(
                7,
                11 * S,
                &ConnEvent::Request {
                    stream: 2 * id + 1,
                    route: "/shop.Orders/Create".into(),
                },
            );
        }
        let v = judge(&l, 20 * S, S, no_names).expect("stalled");
        assert_eq!((v.unanswered, v.unit.as_str()), (12, "gRPC streams"));
        assert_eq!(v.pool, None);
    }
}
