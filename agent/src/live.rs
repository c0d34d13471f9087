//! The WebSocket connections open right now, so that the control socket can send
//! messages into them. Each connection registers when it upgrades and is gone from
//! here when its relay ends (the registration is dropped with it).
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use frametap_control::Refusal;
use frametap_store::TrafficId;
use tokio::sync::{mpsc, oneshot};

use frametap_session::Peer;

/// Injections waiting for one connection's relay to take them.
const QUEUE: usize = 64;

/// A message to send into a live connection, and where to say how it went.
pub struct Injection {
    pub to: Peer,
    pub content: Vec<u8>,
    pub is_binary: bool,
    /// The injected frame's sequence number, or why it was refused.
    pub reply: oneshot::Sender<Result<u64, (Refusal, String)>>,
}

#[derive(Default)]
pub struct LiveConnections {
    open: Mutex<HashMap<TrafficId, mpsc::Sender<Injection>>>,
}

/// Keeps a connection listed while it lives.
pub struct Registration {
    live: Arc<LiveConnections>,
    traffic: TrafficId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.live.lock().remove(&self.traffic);
    }
}

impl LiveConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TrafficId, mpsc::Sender<Injection>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(
        self: &Arc<Self>,
        traffic: TrafficId,
    ) -> (Registration, mpsc::Receiver<Injection>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.lock().insert(traffic, tx);
        (
            Registration {
                live: Arc::clone(self),
                traffic,
            },
            rx,
        )
    }

    /// Hands a message to the connection's relay and waits for its answer.
    pub async fn inject(
        &self,
        traffic: TrafficId,
        to: Peer,
        content: Vec<u8>,
        is_binary: bool,
    ) -> Result<u64, (Refusal, String)> {
        let Some(sender) = self.lock().get(&traffic).cloned() else {
            return Err((
                Refusal::NotFound,
                format!("no open WebSocket connection {traffic}"),
            ));
        };
        let (reply, answer) = oneshot::channel();
        let injection = Injection {
            to,
            content,
            is_binary,
            reply,
        };
        let gone = || {
            (
                Refusal::Conflict,
                format!("WebSocket connection {traffic} has ended"),
            )
        };
        match sender.try_send(injection) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err((
                    Refusal::Conflict,
                    format!(
                        "{QUEUE} messages are already waiting to be sent into {traffic}; try again"
                    ),
                ));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(gone()),
        }
        answer.await.unwrap_or_else(|_| Err(gone()))
    }
}
