//! Worker-to-worker messages, routed by the reactor: the primary's
//! JavaScript is not in the path. A worker sends a [`Kind::Relay`] frame whose
//! payload starts with the target (a worker id, [`BROADCAST`] or [`AGENT`])
//! and its own sequence number; each target receives a `Relay` frame that
//! starts with the sender's id and that sequence number; the sender gets a
//! `{"op":"relayed"}` control frame saying how many workers it reached when
//! it asked for one (sequence number not 0) or when the target is gone.

use super::{Event, Loop};
use crate::frame::Kind;

/// Target meaning "every other worker" (the agent excluded).
pub const BROADCAST: u32 = 0;
/// Target meaning "the agent process, whichever worker id it has now".
pub const AGENT: u32 = u32::MAX;

impl Loop {
    pub(super) fn relay(&mut self, from: u32, flags: u8, payload: &[u8]) {
        if payload.len() < 8 {
            self.events.push(Event::Error {
                worker: from,
                message: format!(
                    "worker {from}: relay frame of {} bytes has no header",
                    payload.len()
                ),
            });
            return;
        }
        let target = u32::from_le_bytes(payload[0..4].try_into().expect("4 bytes"));
        let seq = u32::from_le_bytes(payload[4..8].try_into().expect("4 bytes"));
        let agent = self.sup.agent_worker();
        let targets: Vec<u32> = match target {
            BROADCAST => {
                let mut ids: Vec<u32> = self
                    .workers
                    .iter()
                    .filter(|(id, w)| **id != from && w.connected && Some(**id) != agent)
                    .map(|(id, _)| *id)
                    .collect();
                ids.sort_unstable();
                ids
            }
            AGENT => agent.into_iter().collect(),
            id => self
                .workers
                .get(&id)
                .filter(|w| w.connected)
                .map(|_| id)
                .into_iter()
                .collect(),
        };
        let mut out = Vec::with_capacity(payload.len());
        out.extend_from_slice(&from.to_le_bytes());
        out.extend_from_slice(&payload[4..]);
        let mut delivered = 0u32;
        for t in &targets {
            if let Some(w) = self.workers.get(t) {
                if w.channel.send_relay(flags, out.clone()).is_ok() {
                    delivered += 1;
                }
            }
        }
        let error = if target != BROADCAST && delivered == 0 {
            let name = if target == AGENT {
                "the agent".to_string()
            } else {
                format!("worker {target}")
            };
            Some(format!(
                "{name} is not connected (unknown, exited or disconnected)"
            ))
        } else {
            None
        };
        // The sender hears back only when it asked (a callback: seq != 0) or
        // when nothing was delivered: no extra frame per message otherwise.
        if seq == 0 && error.is_none() {
            return;
        }
        let reply = serde_json::json!({
            "op": "relayed",
            "seq": seq,
            "delivered": delivered,
            "error": error,
        })
        .to_string();
        if let Some(w) = self.workers.get(&from) {
            let _ = w
                .channel
                .send_frame(Kind::Control, 0, 0, reply.as_bytes(), None);
        }
    }
}
