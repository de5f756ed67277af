//! Group commit for the metadata store: callers that need their writes
//! durable share rounds of one sync. A caller is covered by the first round
//! that *starts* after it asks (a round already running may have begun
//! before its write); while one round runs, everyone who asks meanwhile
//! waits for the next, which one of them runs for all.
//!
//! A failed round poisons: every caller of it, and every later one, gets
//! the error, because after a failed fsync the kernel may have dropped the
//! writes it did not report (it reports a lost write-back once), so a later
//! sync that succeeds proves nothing.

use parking_lot::{Condvar, Mutex};

#[derive(Debug, Default)]
pub(crate) struct SyncRounds {
    state: Mutex<Rounds>,
    /// Signalled when a round ends.
    ended: Condvar,
}

#[derive(Debug, Default)]
struct Rounds {
    /// Rounds started so far; the number of the running or last round.
    started: u64,
    /// The last round that ended.
    ended: u64,
    running: bool,
    /// The first failure; set for good.
    failed: Option<String>,
}

impl SyncRounds {
    /// Returns once a round of `sync` that started after this call has
    /// succeeded, running it here if none is running.
    pub(crate) fn sync(&self, sync: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
        let mut state = self.state.lock();
        let needed = state.started + 1;
        loop {
            if let Some(reason) = &state.failed {
                return Err(reason.clone());
            }
            if state.ended >= needed {
                return Ok(());
            }
            if !state.running {
                // `needed` is the next round: nobody started it yet.
                state.running = true;
                state.started += 1;
                drop(state);
                let result = sync();
                let mut state = self.state.lock();
                state.running = false;
                state.ended = state.started;
                if let Err(reason) = &result {
                    state.failed.get_or_insert_with(|| reason.clone());
                }
                self.ended.notify_all();
                return result;
            }
            self.ended.wait(&mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn callers_that_ask_during_a_round_share_the_next_one() {
        let rounds = Arc::new(SyncRounds::default());
        let syncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (rounds, syncs) = (rounds.clone(), syncs.clone());
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        rounds
                            .sync(|| {
                                syncs.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(2));
                                Ok(())
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let syncs = syncs.load(Ordering::SeqCst);
        assert!(syncs < 16 * 20 / 2, "{syncs} syncs for 320 callers");
    }

    #[test]
    fn a_caller_is_covered_only_by_a_round_that_started_after_it() {
        let rounds = Arc::new(SyncRounds::default());
        let (entered, release) = (Arc::new(Mutex::new(false)), Arc::new(Condvar::new()));
        let first = {
            let (rounds, entered, release) = (rounds.clone(), entered.clone(), release.clone());
            std::thread::spawn(move || {
                rounds.sync(|| {
                    let mut entered = entered.lock();
                    *entered = true;
                    release.notify_all();
                    // Held until the second caller has asked.
                    release.wait(&mut entered);
                    Ok(())
                })
            })
        };
        {
            let mut started = entered.lock();
            while !*started {
                release.wait(&mut started);
            }
        }
        let ran_second_round = Arc::new(AtomicU64::new(0));
        let second = {
            let (rounds, ran) = (rounds.clone(), ran_second_round.clone());
            std::thread::spawn(move || {
                rounds.sync(|| {
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
            })
        };
        // Let the second caller ask while the first round runs.
        std::thread::sleep(Duration::from_millis(50));
        {
            let _entered = entered.lock();
            release.notify_all();
        }
        assert_eq!(first.join().unwrap(), Ok(()));
        assert_eq!(second.join().unwrap(), Ok(()));
        assert_eq!(ran_second_round.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_failed_round_fails_every_later_caller() {
        let rounds = SyncRounds::default();
        assert_eq!(
            rounds.sync(|| Err("disk gone".to_owned())),
            Err("disk gone".to_owned())
        );
        assert_eq!(rounds.sync(|| Ok(())), Err("disk gone".to_owned()));
    }
}
