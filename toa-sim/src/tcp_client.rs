//! A deliberately small user-space TCP client: the "L4 proxy" side of one
//! connection, driven over the TUN device.
//!
//! Stop-and-wait with one segment in flight, no window scaling, timestamps or
//! SACK (the SYN offers only MSS, so the kernel uses none of them). The point
//! is full control over the packet that completes the handshake: that ACK
//! carries the TOA option, exactly like a real proxy's. An [`OptionPlan`] can
//! put other option bytes on the SYN, that ACK, or the request segment, and
//! can let the request itself complete the handshake.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::error::{sim_err, Result};
use crate::packet::{self, flags, Received, Segment};
use crate::toa_option::Toa;
use crate::tun::Link;

/// Option bytes a connection sends, by packet. Each area is padded with NOPs
/// to whole 32-bit words when the packet is built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptionPlan {
    /// After the MSS option on the SYN (at most 36 bytes).
    pub syn: Vec<u8>,
    /// On the packet that completes the handshake.
    pub ack: Vec<u8>,
    /// On the request segment, when it does not complete the handshake.
    pub data: Vec<u8>,
    /// No separate ACK: the request segment completes the handshake (and
    /// carries `ack`).
    pub ack_with_request: bool,
}

impl OptionPlan {
    /// A proxy's usual shape: the TOA on the handshake ACK, if any.
    pub fn toa(toa: Option<&Toa>) -> OptionPlan {
        OptionPlan {
            ack: toa.map(Toa::encode).unwrap_or_default(),
            ..OptionPlan::default()
        }
    }
}

/// Retransmission timeout for our SYN, data and FIN. Loss cannot happen on a
/// TUN, but a slow emulated guest may answer late; a retransmission is then
/// a harmless duplicate for the kernel.
const RTO: Duration = Duration::from_millis(1000);
const WINDOW: u16 = 65535;

/// A segment we may have to send again.
struct InFlight {
    packet: Vec<u8>,
    sent_at: Instant,
}

pub struct TcpClient<'t> {
    link: &'t dyn Link,
    label: String,
    local: SocketAddr,
    remote: SocketAddr,
    step_timeout: Duration,
    /// Option bytes for each packet; `ack` goes on the handshake-completing one.
    plan: OptionPlan,
    /// The handshake still waits for the request segment to complete it.
    ack_pending: bool,
    /// The first request segment has gone out.
    request_sent: bool,
    iss: u32,
    /// Peer's initial sequence number, to recognise a repeated SYN-ACK.
    irs: Option<u32>,
    snd_una: u32,
    snd_nxt: u32,
    rcv_nxt: u32,
    fin_sent: bool,
    peer_fin: bool,
    reset: bool,
    received: Vec<u8>,
    in_flight: Option<InFlight>,
    ip_id: u16,
}

/// `a < b` in sequence space (RFC 793 modular comparison).
fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

fn seq_le(a: u32, b: u32) -> bool {
    a == b || seq_lt(a, b)
}

/// An initial sequence number from a clock, as RFC 793 suggests: a port used
/// again (long runs cycle through the port range) starts above where the
/// previous connection on it ended, so the origin's TIME_WAIT socket for that
/// 4-tuple accepts the new SYN instead of answering with an ACK. The clock
/// ticks every 256 ns (2^31 ticks is over 9 minutes, far beyond TIME_WAIT);
/// the start is random per run.
fn initial_sequence() -> u32 {
    use std::sync::OnceLock;
    static START: OnceLock<(Instant, u32)> = OnceLock::new();
    let (t0, base) = *START.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut x = nanos ^ u64::from(std::process::id());
        // splitmix64 finaliser
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (Instant::now(), (x ^ (x >> 31)) as u32)
    });
    let ticks = (t0.elapsed().as_nanos() / 256) as u32;
    base.wrapping_add(ticks)
}

impl<'t> TcpClient<'t> {
    /// Performs the three-way handshake with the options of `plan`; with
    /// `plan.ack_with_request` it returns after the SYN-ACK and the first
    /// `send` completes the handshake.
    pub fn connect(
        link: &'t dyn Link,
        local: SocketAddr,
        remote: SocketAddr,
        plan: &OptionPlan,
        step_timeout: Duration,
    ) -> Result<TcpClient<'t>> {
        let iss = initial_sequence();
        let mut c = TcpClient {
            link,
            label: format!("{local} -> {remote}"),
            local,
            remote,
            step_timeout,
            plan: plan.clone(),
            ack_pending: false,
            request_sent: false,
            iss,
            irs: None,
            snd_una: iss,
            snd_nxt: iss.wrapping_add(1),
            rcv_nxt: 0,
            fin_sent: false,
            peer_fin: false,
            reset: false,
            received: Vec::new(),
            in_flight: None,
            ip_id: iss as u16,
        };
        // Leave room for the IP and TCP headers within a 1500-byte MTU.
        let mss = if local.is_ipv4() { 1460 } else { 1440 };
        let mut syn_options = packet::mss_option(mss).to_vec();
        syn_options.extend_from_slice(&plan.syn);
        let syn = c.build(iss, 0, flags::SYN, &syn_options, &[]);
        c.transmit_reliably(syn)?;
        c.pump_until("waiting for the SYN-ACK", |c| c.irs.is_some())?;
        Ok(c)
    }

    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Sends `data` in one segment; its ACK is awaited by the next step. The
    /// first segment carries the plan's request options (or, when it
    /// completes the handshake, its ACK options).
    pub fn send(&mut self, data: &[u8]) -> Result<()> {
        self.pump_until("waiting for earlier data to be acknowledged", |c| {
            c.all_acked()
        })?;
        let options = match (self.request_sent, self.ack_pending) {
            (false, true) => self.plan.ack.clone(),
            (false, false) => self.plan.data.clone(),
            (true, _) => Vec::new(),
        };
        self.request_sent = true;
        self.ack_pending = false;
        let seg = self.build(
            self.snd_nxt,
            self.rcv_nxt,
            flags::PSH | flags::ACK,
            &options,
            data,
        );
        self.snd_nxt = self.snd_nxt.wrapping_add(data.len() as u32);
        self.transmit_reliably(seg)
    }

    /// Reads until a newline has arrived and our request is acknowledged.
    pub fn read_line(&mut self) -> Result<Vec<u8>> {
        self.pump_until("waiting for the reply", |c| {
            (c.received.contains(&b'\n') && c.all_acked()) || c.peer_fin
        })?;
        if !self.received.contains(&b'\n') {
            return Err(sim_err!(
                "{}: origin closed after sending {:?} without a full reply line",
                self.label,
                String::from_utf8_lossy(&self.received)
            ));
        }
        Ok(std::mem::take(&mut self.received))
    }

    /// Clean close: whichever side sent its FIN first, both FINs end up sent
    /// and acknowledged.
    pub fn close(mut self) -> Result<()> {
        self.pump_until("waiting for data to be acknowledged before FIN", |c| {
            c.all_acked()
        })?;
        let fin = self.build(
            self.snd_nxt,
            self.rcv_nxt,
            flags::FIN | flags::ACK,
            &[],
            &[],
        );
        self.snd_nxt = self.snd_nxt.wrapping_add(1);
        self.fin_sent = true;
        self.transmit_reliably(fin)?;
        self.pump_until("waiting for the FIN exchange", |c| {
            c.all_acked() && c.peer_fin
        })
    }

    fn all_acked(&self) -> bool {
        self.snd_una == self.snd_nxt
    }

    fn build(&mut self, seq: u32, ack: u32, fl: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
        self.ip_id = self.ip_id.wrapping_add(1);
        packet::build(
            &Segment {
                src: self.local,
                dst: self.remote,
                seq,
                ack,
                flags: fl,
                window: WINDOW,
                options,
                payload,
            },
            self.ip_id,
        )
    }

    fn transmit_reliably(&mut self, packet: Vec<u8>) -> Result<()> {
        self.link.send(&packet)?;
        self.in_flight = Some(InFlight {
            packet,
            sent_at: Instant::now(),
        });
        Ok(())
    }

    fn send_ack(&mut self, options: &[u8]) -> Result<()> {
        let ack = self.build(self.snd_nxt, self.rcv_nxt, flags::ACK, options, &[]);
        self.link.send(&ack)
    }

    /// Processes segments until `done` holds, retransmitting as needed;
    /// errors name the connection and `step`.
    fn pump_until(&mut self, step: &str, done: impl Fn(&Self) -> bool) -> Result<()> {
        let deadline = Instant::now() + self.step_timeout;
        loop {
            if self.reset {
                return Err(sim_err!(
                    "{}: connection reset by the origin while {step}",
                    self.label
                ));
            }
            if done(self) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                let mut msg = format!(
                    "{}: timed out after {:?} {step}",
                    self.label, self.step_timeout
                );
                let bad = self.link.bad_checksums();
                if bad > 0 {
                    msg.push_str(&format!(" ({bad} packets with bad checksums were dropped)"));
                }
                return Err(sim_err!("{msg}"));
            }
            let mut wake = deadline;
            if let Some(f) = &mut self.in_flight {
                if now >= f.sent_at + RTO {
                    self.link.send(&f.packet)?;
                    f.sent_at = now;
                }
                wake = wake.min(f.sent_at + RTO);
            }
            let (local, remote) = (self.local, self.remote);
            let ours = move |s: &Received| s.src == remote && s.dst == local;
            if let Some(seg) = self.link.recv_matching(&ours, wake)? {
                self.handle(&seg)?;
            }
        }
    }

    fn handle(&mut self, seg: &Received) -> Result<()> {
        if seg.has(flags::RST) {
            self.reset = true;
            return Ok(());
        }
        let is_syn_ack = seg.has(flags::SYN) && seg.has(flags::ACK);
        match self.irs {
            None => {
                if is_syn_ack && seg.ack == self.iss.wrapping_add(1) {
                    self.irs = Some(seg.seq);
                    self.rcv_nxt = seg.seq.wrapping_add(1);
                    self.snd_una = seg.ack;
                    self.in_flight = None;
                    if self.plan.ack_with_request {
                        self.ack_pending = true;
                    } else {
                        let options = self.plan.ack.clone();
                        self.send_ack(&options)?;
                    }
                }
                // Anything else before the SYN-ACK is stale; ignore it.
                return Ok(());
            }
            Some(irs) if is_syn_ack => {
                // The kernel did not see our ACK and repeats its SYN-ACK: the
                // ACK that completes the handshake is this one, so it must
                // carry the TOA again. When the request completes the
                // handshake, the request is what goes again.
                if seg.seq == irs && self.plan.ack_with_request {
                    if let Some(f) = &mut self.in_flight {
                        self.link.send(&f.packet)?;
                        f.sent_at = Instant::now();
                    }
                } else if seg.seq == irs {
                    let ack = self.build(
                        self.iss.wrapping_add(1),
                        irs.wrapping_add(1),
                        flags::ACK,
                        &self.plan.ack.clone(),
                        &[],
                    );
                    self.link.send(&ack)?;
                }
                return Ok(());
            }
            Some(_) => {}
        }

        if seg.has(flags::ACK) && seq_lt(self.snd_una, seg.ack) && seq_le(seg.ack, self.snd_nxt) {
            self.snd_una = seg.ack;
            if self.all_acked() {
                self.in_flight = None;
            }
        }

        if seg.seq_len() == 0 {
            return Ok(());
        }
        if seg.seq == self.rcv_nxt && !self.peer_fin {
            self.received.extend_from_slice(&seg.payload);
            self.rcv_nxt = self.rcv_nxt.wrapping_add(seg.payload.len() as u32);
            if seg.has(flags::FIN) {
                self.peer_fin = true;
                self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            }
        }
        // In order or not (a retransmission we already have, or a gap that
        // cannot happen on a TUN), acknowledging what we hold resynchronises
        // the kernel.
        self.send_ack(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_sequence_comparison_wraps() {
        assert!(seq_lt(1, 2));
        assert!(!seq_lt(2, 1));
        assert!(seq_lt(u32::MAX, 0));
        assert!(seq_lt(u32::MAX - 5, 3));
        assert!(seq_le(7, 7));
        assert!(!seq_lt(7, 7));
    }

    use crate::toa_option::KIND_TOA;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    const IRS: u32 = 1000;

    /// The server side of one connection, as a function from each packet
    /// the client sends to the segments the "kernel" answers with.
    type Responder = Box<dyn FnMut(&Received) -> Vec<Received>>;

    struct ScriptedLink {
        sent: RefCell<Vec<Received>>,
        inbox: RefCell<VecDeque<Received>>,
        respond: RefCell<Responder>,
    }

    impl ScriptedLink {
        fn new(respond: impl FnMut(&Received) -> Vec<Received> + 'static) -> Self {
            ScriptedLink {
                sent: RefCell::new(Vec::new()),
                inbox: RefCell::new(VecDeque::new()),
                respond: RefCell::new(Box::new(respond)),
            }
        }

        fn sent(&self) -> Vec<Received> {
            self.sent.borrow().clone()
        }
    }

    impl Link for ScriptedLink {
        fn send(&self, packet: &[u8]) -> Result<()> {
            let seg = packet::parse(packet).expect("the client builds valid packets");
            let answers = (self.respond.borrow_mut())(&seg);
            self.sent.borrow_mut().push(seg);
            self.inbox.borrow_mut().extend(answers);
            Ok(())
        }

        fn recv_matching(
            &self,
            wanted: &dyn Fn(&Received) -> bool,
            deadline: Instant,
        ) -> Result<Option<Received>> {
            let mut inbox = self.inbox.borrow_mut();
            if let Some(at) = inbox.iter().position(wanted) {
                return Ok(inbox.remove(at));
            }
            drop(inbox);
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            Ok(None)
        }

        fn bad_checksums(&self) -> u64 {
            0
        }
    }

    fn local() -> SocketAddr {
        "10.0.0.2:30000".parse().unwrap()
    }

    fn remote() -> SocketAddr {
        "10.0.0.1:8080".parse().unwrap()
    }

    fn from_server(seq: u32, ack: u32, fl: u8, payload: &[u8]) -> Received {
        Received {
            src: remote(),
            dst: local(),
            seq,
            ack,
            flags: fl,
            window: 65535,
            options: Vec::new(),
            payload: payload.to_vec(),
        }
    }

    fn syn_ack(syn: &Received) -> Received {
        from_server(IRS, syn.seq.wrapping_add(1), flags::SYN | flags::ACK, &[])
    }

    fn toa() -> Toa {
        Toa::new(KIND_TOA, "198.51.100.7:40001".parse().unwrap())
    }

    fn connect(link: &ScriptedLink, timeout_ms: u64) -> Result<TcpClient<'_>> {
        let toa = toa();
        TcpClient::connect(
            link,
            local(),
            remote(),
            &OptionPlan::toa(Some(&toa)),
            Duration::from_millis(timeout_ms),
        )
    }

    /// A well-behaved origin that answers the request with data and FIN in
    /// one segment (it closed right after writing).
    fn origin_closing_with_reply(
        dup_syn_ack: bool,
        dup_reply: bool,
    ) -> impl FnMut(&Received) -> Vec<Received> {
        move |seg| {
            let end = seg.seq.wrapping_add(seg.seq_len());
            if seg.has(flags::SYN) {
                let sa = syn_ack(seg);
                return if dup_syn_ack {
                    vec![sa.clone(), sa]
                } else {
                    vec![sa]
                };
            }
            if seg.payload == b"hello\n" {
                let reply =
                    from_server(IRS + 1, end, flags::PSH | flags::ACK | flags::FIN, b"ok\n");
                return if dup_reply {
                    vec![reply.clone(), reply]
                } else {
                    vec![reply]
                };
            }
            if seg.has(flags::FIN) {
                return vec![from_server(IRS + 5, end, flags::ACK, &[])];
            }
            Vec::new()
        }
    }

    #[test]
    fn test_handshake_ack_carries_toa_and_full_exchange() {
        let link = ScriptedLink::new(origin_closing_with_reply(false, false));
        let mut c = connect(&link, 500).unwrap();
        c.send(b"hello\n").unwrap();
        assert_eq!(c.read_line().unwrap(), b"ok\n");
        c.close().unwrap();

        let sent = link.sent();
        let syn = &sent[0];
        assert_eq!(syn.flags, flags::SYN);
        assert_eq!(syn.options, packet::mss_option(1460), "SYN offers MSS only");
        let ack = &sent[1];
        assert_eq!(ack.flags, flags::ACK);
        assert_eq!(ack.ack, IRS + 1);
        assert_eq!(ack.options, toa().encode(), "handshake ACK carries the TOA");
        assert!(
            sent[2..].iter().all(|s| s.options.is_empty()),
            "TOA only on the handshake ACK"
        );
        let fin = sent.iter().find(|s| s.has(flags::FIN)).unwrap();
        assert_eq!(fin.seq, syn.seq.wrapping_add(1 + 6));
        assert_eq!(
            fin.ack,
            IRS + 1 + 3 + 1,
            "FIN acknowledges the reply and the peer's FIN"
        );
    }

    #[test]
    fn test_repeated_syn_ack_gets_the_toa_ack_again() {
        let link = ScriptedLink::new(origin_closing_with_reply(true, false));
        let mut c = connect(&link, 500).unwrap();
        c.send(b"hello\n").unwrap();
        c.read_line().unwrap();
        c.close().unwrap();
        let toa_acks: Vec<Received> = link
            .sent()
            .into_iter()
            .filter(|s| s.options == toa().encode())
            .collect();
        assert_eq!(toa_acks.len(), 2, "one per SYN-ACK");
        assert!(toa_acks
            .iter()
            .all(|s| s.ack == IRS + 1 && s.flags == flags::ACK));
    }

    #[test]
    fn test_duplicate_data_is_acked_not_delivered_twice() {
        let link = ScriptedLink::new(origin_closing_with_reply(false, true));
        let mut c = connect(&link, 500).unwrap();
        c.send(b"hello\n").unwrap();
        assert_eq!(c.read_line().unwrap(), b"ok\n");
        c.close().unwrap();
        // The duplicate (still queued after read_line) is acknowledged again
        // with the same, unchanged acknowledgement number.
        let acks_of_reply = link
            .sent()
            .iter()
            .filter(|s| s.flags == flags::ACK && s.ack == IRS + 5)
            .count();
        assert!(acks_of_reply >= 2, "{:#?}", link.sent());
    }

    #[test]
    fn test_client_fin_first() {
        // The origin keeps the socket open until it sees our FIN, then closes.
        let link = ScriptedLink::new(|seg: &Received| {
            let end = seg.seq.wrapping_add(seg.seq_len());
            if seg.has(flags::SYN) {
                vec![syn_ack(seg)]
            } else if seg.payload == b"hello\n" {
                vec![from_server(IRS + 1, end, flags::PSH | flags::ACK, b"ok\n")]
            } else if seg.has(flags::FIN) {
                vec![
                    from_server(IRS + 4, end, flags::ACK, &[]),
                    from_server(IRS + 4, end, flags::FIN | flags::ACK, &[]),
                ]
            } else {
                Vec::new()
            }
        });
        let mut c = connect(&link, 500).unwrap();
        c.send(b"hello\n").unwrap();
        c.read_line().unwrap();
        c.close().unwrap();
        let last = link.sent().last().cloned().unwrap();
        assert_eq!(last.flags, flags::ACK);
        assert_eq!(last.ack, IRS + 5, "the peer's FIN is acknowledged");
    }

    #[test]
    fn test_reset_names_the_step() {
        let link = ScriptedLink::new(|seg: &Received| {
            vec![from_server(
                0,
                seg.seq.wrapping_add(1),
                flags::RST | flags::ACK,
                &[],
            )]
        });
        let err = connect(&link, 500).err().expect("reset").to_string();
        assert!(err.contains("reset"), "{err}");
        assert!(err.contains("waiting for the SYN-ACK"), "{err}");
        assert!(err.contains("10.0.0.2:30000 -> 10.0.0.1:8080"), "{err}");
    }

    #[test]
    fn test_timeout_names_the_step() {
        let link = ScriptedLink::new(|seg: &Received| {
            if seg.has(flags::SYN) {
                vec![syn_ack(seg)]
            } else {
                Vec::new() // never answers the request
            }
        });
        let mut c = connect(&link, 100).unwrap();
        c.send(b"hello\n").unwrap();
        let err = c.read_line().unwrap_err().to_string();
        assert!(err.contains("timed out"), "{err}");
        assert!(err.contains("waiting for the reply"), "{err}");
    }

    #[test]
    fn test_stale_segments_before_syn_ack_are_ignored() {
        let link = ScriptedLink::new(|seg: &Received| {
            if seg.has(flags::SYN) {
                // A segment with the wrong acknowledgement (an old connection
                // on the same ports), then the real SYN-ACK.
                vec![
                    from_server(5, 12345, flags::SYN | flags::ACK, &[]),
                    syn_ack(seg),
                ]
            } else {
                Vec::new()
            }
        });
        let c = connect(&link, 500).unwrap();
        assert_eq!(c.irs, Some(IRS));
    }

    #[test]
    fn test_initial_sequence_moves_forward() {
        let a = initial_sequence();
        std::thread::sleep(Duration::from_millis(2));
        let b = initial_sequence();
        assert!(seq_lt(a, b), "{a} then {b}");
        assert!(b.wrapping_sub(a) >= 2_000_000 / 256);
    }

    #[test]
    fn test_plan_puts_options_on_syn_and_request() {
        let link = ScriptedLink::new(origin_closing_with_reply(false, false));
        let plan = OptionPlan {
            syn: vec![254, 8, 0, 1, 10, 0, 0, 9],
            ack: vec![],
            data: vec![1, 1, 1, 0],
            ack_with_request: false,
        };
        let mut c = TcpClient::connect(&link, local(), remote(), &plan, Duration::from_millis(500))
            .unwrap();
        c.send(b"hello\n").unwrap();
        c.read_line().unwrap();
        c.close().unwrap();
        let sent = link.sent();
        assert_eq!(sent[0].options[..4], packet::mss_option(1460));
        assert_eq!(sent[0].options[4..], plan.syn[..]);
        assert_eq!(sent[1].flags, flags::ACK);
        assert!(sent[1].options.is_empty());
        assert_eq!(sent[2].payload, b"hello\n");
        assert_eq!(sent[2].options, plan.data);
        assert!(sent[3..].iter().all(|s| s.options.is_empty()));
    }

    #[test]
    fn test_request_can_complete_the_handshake() {
        let link = ScriptedLink::new(origin_closing_with_reply(true, false));
        let plan = OptionPlan {
            ack: toa().encode(),
            data: vec![9, 9, 9, 9],
            ack_with_request: true,
            ..OptionPlan::default()
        };
        let mut c = TcpClient::connect(&link, local(), remote(), &plan, Duration::from_millis(500))
            .unwrap();
        c.send(b"hello\n").unwrap();
        assert_eq!(c.read_line().unwrap(), b"ok\n");
        c.close().unwrap();
        let sent = link.sent();
        assert_eq!(sent[0].flags, flags::SYN);
        let request = &sent[1];
        assert_eq!(request.flags, flags::PSH | flags::ACK, "no pure ACK first");
        assert_eq!(request.ack, IRS + 1);
        assert_eq!(request.payload, b"hello\n");
        assert_eq!(request.options, toa().encode());
        assert!(
            !sent.iter().any(|s| s.options == plan.data),
            "the request carried the handshake options, not the data ones"
        );
    }
}
