//! Deciders: threads that make the core's decisions on fetched messages while the IMAP
//! task goes on fetching, recording and filing. Deciding is pure (reading a document
//! waits on a child process); the brakes that need the journal are applied afterwards,
//! in the order the messages came, on the service's own task. The deciders also keep
//! each message's bytes for replay (`service.keep_messages_days`): writing them was a
//! sixth of that task's time.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::core::plan::{Plan, Playbook};
use crate::shell::journal::Kept;

/// One message to decide: its place in the batch, its UID and its bytes.
type Job = (usize, u32, Vec<u8>);
/// The same, decided.
pub(super) struct Done {
    pub seq: usize,
    pub uid: u32,
    pub raw: Vec<u8>,
    pub plan: Plan,
    /// Where its bytes were kept (`Kept::write`), when they are kept.
    pub kept: Option<String>,
}

pub(super) struct Deciders {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
}

impl Deciders {
    /// As many threads as the machine has cores, at most four (the IMAP task and the
    /// servers need the rest).
    pub fn start(book: &Arc<Playbook>, keep: Option<Arc<Kept>>) -> Deciders {
        let n = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        let (jobs, queue) = channel::<Job>();
        let (finished, done) = channel::<Done>();
        let queue = Arc::new(Mutex::new(queue));
        let threads = (0..n)
            .map(|i| {
                let (book, queue, finished) = (book.clone(), queue.clone(), finished.clone());
                let keep = keep.clone();
                std::thread::Builder::new()
                    .name(format!("decide-{i}"))
                    .spawn(move || loop {
                        // The lock is held only to take a job, not while deciding it.
                        let job = queue.lock().map(|q| q.recv());
                        let Ok(Ok((seq, uid, raw))) = job else {
                            return;
                        };
                        let plan = book.decide(&raw);
                        let kept = keep.as_ref().and_then(|k| k.keep(uid, &raw));
                        let done = Done {
                            seq,
                            uid,
                            raw,
                            plan,
                            kept,
                        };
                        if finished.send(done).is_err() {
                            return;
                        }
                    })
                    .expect("a thread can be started")
            })
            .collect();
        Deciders {
            jobs: Some(jobs),
            done,
            threads,
        }
    }

    pub fn submit(&self, seq: usize, uid: u32, raw: Vec<u8>) {
        if let Some(jobs) = &self.jobs {
            // The threads outlive every job sent: a send cannot fail before `finish`.
            let _ = jobs.send((seq, uid, raw));
        }
    }

    /// Decisions ready now, without waiting.
    pub fn ready(&self) -> impl Iterator<Item = Done> + '_ {
        self.done.try_iter()
    }

    /// Every decision still to come, waiting for them.
    pub fn finish(mut self) -> Vec<Done> {
        self.jobs = None;
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
        self.done.try_iter().collect()
    }
}

impl Drop for Deciders {
    fn drop(&mut self) {
        // Closing the queue ends the threads after the job in hand.
        self.jobs = None;
    }
}
