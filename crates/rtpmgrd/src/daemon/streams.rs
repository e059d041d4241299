// SPDX-License-Identifier: MIT
//! Every configured stream by name, each in exactly one [`StreamState`].
//!
//! This is the supervisor's one record of what each stream is doing. It
//! replaces four collections that had to agree (the user-space table, the
//! kernel streams, the fallback reasons, the failed streams): a name could
//! be in two of them, or keep a fallback reason after it had failed.
//!
//! Invariants, kept by [`Streams`] being the only writer of both the map
//! and the data threads' [`StreamTable`]:
//!
//! * a name has one state (it is a map key);
//! * the table holds exactly the [`Stream`]s of the [`StreamState::Running`]
//!   and [`StreamState::Fallback`] entries: [`Streams::put`] publishes a
//!   user-space stream, [`Streams::take`] withdraws it before the caller
//!   stops it on the device (so the threads never see a stopped id);
//! * only a stream that runs in user space because its `mode = "kernel"`
//!   could not be had carries a fallback reason;
//! * a [`StreamState::Failed`] stream holds no socket and no device id;
//!   every device id belongs to at most one entry ([`Streams::uses_id`]).

use super::supervisor::Waiting;
use crate::kernel_path::KernelStream;
use crate::stream::{Stream, StreamTable};
use rtpmgr_config::StreamConfig;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What one configured stream is doing now.
pub(super) enum StreamState {
    /// Runs in user space: its packets pass the receiver and transmitter.
    Running(Arc<Stream>),
    /// `mode = "kernel"`, but runs in user space because the device cannot
    /// run it; `reason` is what the status report shows as `fallback`.
    Fallback { stream: Arc<Stream>, reason: String },
    /// Runs in the module; no packet of it passes rtpmgrd.
    Kernel(KernelStream),
    /// Not running; tried again at `Waiting::next_try`.
    Failed(Waiting),
}

impl StreamState {
    pub fn config(&self) -> &StreamConfig {
        match self {
            StreamState::Running(s) | StreamState::Fallback { stream: s, .. } => &s.config,
            StreamState::Kernel(k) => &k.config,
            StreamState::Failed(w) => &w.config,
        }
    }

    /// The stream the data threads run, if it runs in user space.
    pub fn user_stream(&self) -> Option<&Arc<Stream>> {
        match self {
            StreamState::Running(s) | StreamState::Fallback { stream: s, .. } => Some(s),
            StreamState::Kernel(_) | StreamState::Failed(_) => None,
        }
    }

    pub fn is_running(&self) -> bool {
        !matches!(self, StreamState::Failed(_))
    }

    fn uses_id(&self, id: u32) -> bool {
        match self {
            StreamState::Running(s) | StreamState::Fallback { stream: s, .. } => s.id == id,
            StreamState::Kernel(k) => k.rx_id == id || k.target_id == id,
            StreamState::Failed(_) => false,
        }
    }

    /// The status report lists user-space streams first, then kernel
    /// streams, then failed ones, as it always has.
    fn report_rank(&self) -> u8 {
        match self {
            StreamState::Running(_) | StreamState::Fallback { .. } => 0,
            StreamState::Kernel(_) => 1,
            StreamState::Failed(_) => 2,
        }
    }
}

struct Entry {
    /// When the stream entered its state, as a sequence number: within a
    /// rank the report lists streams in this order (the order of the data
    /// threads' table for user-space streams, of start for kernel streams,
    /// of failure for failed ones).
    since: u64,
    state: StreamState,
}

/// The configured streams, and the table the data threads read.
pub(super) struct Streams {
    by_name: BTreeMap<String, Entry>,
    next_since: u64,
    table: Arc<StreamTable>,
}

impl Streams {
    pub fn new(table: Arc<StreamTable>) -> Streams {
        Streams { by_name: BTreeMap::new(), next_since: 0, table }
    }

    pub fn get(&self, name: &str) -> Option<&StreamState> {
        self.by_name.get(name).map(|e| &e.state)
    }

    /// A failed stream's retry record, to update in place (it keeps its
    /// place in the report).
    pub fn waiting_mut(&mut self, name: &str) -> Option<&mut Waiting> {
        match self.by_name.get_mut(name).map(|e| &mut e.state) {
            Some(StreamState::Failed(w)) => Some(w),
            _ => None,
        }
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.get(name).is_some_and(StreamState::is_running)
    }

    /// Whether any stream holds device stream id `id`.
    pub fn uses_id(&self, id: u32) -> bool {
        self.by_name.values().any(|e| e.state.uses_id(id))
    }

    /// Record `state` for its stream, which must have none (the caller
    /// [`Streams::take`]s the old one first, to stop it). A user-space
    /// stream is published to the data threads here; the caller wakes them.
    pub fn put(&mut self, state: StreamState) {
        let name = state.config().name.clone();
        if let Some(old) = self.take(&name) {
            // A caller bug; the old state's device resources would leak,
            // so at least say so.
            debug_assert!(false, "stream {name} put while in another state");
            log::error!("stream {name}: replaced while {}", if old.is_running() { "running" } else { "failed" });
        }
        if let Some(s) = state.user_stream() {
            self.table.insert(Arc::clone(s));
        }
        let since = self.next_since;
        self.next_since += 1;
        self.by_name.insert(name, Entry { since, state });
    }

    /// Forget `name` and return its state; a user-space stream is
    /// withdrawn from the data threads' table first, so the caller can stop
    /// it on the device once the threads have been woken.
    pub fn take(&mut self, name: &str) -> Option<StreamState> {
        let entry = self.by_name.remove(name)?;
        if entry.state.user_stream().is_some() {
            self.table.remove(name);
        }
        Some(entry.state)
    }

    /// Every stream, in the status report's order.
    pub fn in_report_order(&self) -> Vec<&StreamState> {
        let mut all: Vec<&Entry> = self.by_name.values().collect();
        all.sort_by_key(|e| (e.state.report_rank(), e.since));
        all.into_iter().map(|e| &e.state).collect()
    }

    /// The names of the streams that run (in user space or the module),
    /// in report order.
    pub fn running_names(&self) -> Vec<String> {
        self.in_report_order().into_iter().filter(|s| s.is_running()).map(|s| s.config().name.clone()).collect()
    }

    /// The names of the failed streams, in report order.
    pub fn failed_names(&self) -> Vec<String> {
        self.in_report_order().into_iter().filter(|s| !s.is_running()).map(|s| s.config().name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::path::Path;

    fn config(name: &str) -> StreamConfig {
        let text = format!("[[stream]]\nname = \"{name}\"\ndirection = \"relay\"\nbind = \"127.0.0.1:5004\"\ndestination = \"127.0.0.1:9\"\n");
        rtpmgr_config::Config::parse(&text, Path::new("t.toml")).unwrap().streams.remove(0)
    }

    fn user(id: u32, name: &str) -> Arc<Stream> {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        Arc::new(Stream::new(id, config(name), 0, socket, 2016))
    }

    fn failed(name: &str) -> StreamState {
        StreamState::Failed(Waiting::new(config(name), "no".into()))
    }

    fn table_names(t: &StreamTable) -> Vec<String> {
        t.snapshot().1.iter().map(|s| s.config.name.clone()).collect()
    }

    #[test]
    fn the_threads_table_holds_exactly_the_user_space_streams() {
        let table = Arc::new(StreamTable::default());
        let mut streams = Streams::new(Arc::clone(&table));
        streams.put(StreamState::Running(user(3, "a")));
        streams.put(StreamState::Fallback { stream: user(4, "b"), reason: "sim".into() });
        streams.put(failed("c"));
        assert_eq!(table_names(&table), ["a", "b"]);
        assert!(streams.uses_id(3) && streams.uses_id(4) && !streams.uses_id(0));
        assert!(streams.is_running("b") && !streams.is_running("c") && !streams.is_running("d"));
        // Taken: out of the table before the caller stops it.
        assert!(matches!(streams.take("a"), Some(StreamState::Running(s)) if s.id == 3));
        assert_eq!(table_names(&table), ["b"]);
        assert!(!streams.uses_id(3));
        // A failed stream was never in the table and taking it leaves it be.
        assert!(matches!(streams.take("c"), Some(StreamState::Failed(_))));
        assert_eq!(table_names(&table), ["b"]);
    }

    #[test]
    fn the_report_lists_user_space_then_failed_streams_each_in_their_order() {
        let mut streams = Streams::new(Arc::new(StreamTable::default()));
        streams.put(failed("z"));
        streams.put(StreamState::Running(user(0, "y")));
        streams.put(failed("a"));
        streams.put(StreamState::Fallback { stream: user(1, "b"), reason: "r".into() });
        let order: Vec<&str> = streams.in_report_order().iter().map(|s| s.config().name.as_str()).collect();
        assert_eq!(order, ["y", "b", "z", "a"]);
        assert_eq!(streams.running_names(), ["y", "b"]);
        assert_eq!(streams.failed_names(), ["z", "a"]);
        // Updated in place, a failed stream keeps its place.
        streams.waiting_mut("z").unwrap().attempts = 5;
        assert_eq!(streams.failed_names(), ["z", "a"]);
        assert!(streams.waiting_mut("y").is_none());
    }
}
