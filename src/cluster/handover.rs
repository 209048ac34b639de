//! Which of its engines a member runs, decided from each membership view it reads (pure state,
//! no clock read, no network: every rule is a unit test).
//!
//! An engine is the member's when rendezvous hashing over the view's members gives it to the
//! member. It starts running it:
//! - at once when the engine's owner in the previous view has left the membership: that member's
//!   lease expired (it stopped itself a third of a lease earlier: see the fence in
//!   [`super::member`]) or was revoked at a clean stop, after its loops had ended;
//! - otherwise (a member joined and won the engine from a live member, or this member has no
//!   earlier view: at its start, or after it was fenced) only after the handover delay, by which
//!   the previous owner has either read a view without the engine and stopped it, or gone a
//!   fence period without reading etcd and stopped everything.
//!
//! A fence (no renewal for two thirds of the lease) stops every engine and forgets the previous
//! view. The epoch of a running engine is the revision of the view it runs under.

use std::time::Duration;

use tokio::time::Instant;

use super::rendezvous::owner;

/// The members alive at one revision of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The store's revision the view was read at.
    pub revision: i64,
    /// The members' names.
    pub members: Vec<String>,
}

/// Where one engine stands for this member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Another member's (or nobody's).
    Elsewhere,
    /// This member's from the given instant on (the handover delay not over yet).
    Waiting(Instant),
    /// Run by this member.
    Running,
}

/// Why an engine started running here, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Its previous owner left the membership.
    TakenOver {
        /// The member that had it.
        from: String,
    },
    /// The handover delay passed.
    AfterDelay,
}

/// The engines' statuses and the view they were decided from.
#[derive(Debug)]
pub struct Handover {
    me: String,
    engines: Vec<String>,
    delay: Duration,
    /// Each engine's owner in the previous view; none before the first view and after a fence.
    previous: Option<Vec<Option<String>>>,
    status: Vec<Status>,
    revision: i64,
}

impl Handover {
    /// Nothing runs yet. `delay`: how long a gained engine whose previous owner may still run it
    /// waits.
    pub fn new(me: String, engines: Vec<String>, delay: Duration) -> Self {
        let count = engines.len();
        Self {
            me,
            engines,
            delay,
            previous: None,
            status: vec![Status::Elsewhere; count],
            revision: 0,
        }
    }

    /// Take a new view read at `now`: the engines that start running (with why), and each
    /// engine's epoch (`Some(revision)` while this member runs it).
    pub fn view(&mut self, view: &View, now: Instant) -> (Vec<(usize, Start)>, Vec<Option<i64>>) {
        let owners: Vec<Option<String>> = self
            .engines
            .iter()
            .map(|engine| owner(engine, &view.members).map(str::to_string))
            .collect();
        let mut started = Vec::new();
        for (e, new_owner) in owners.iter().enumerate() {
            if new_owner.as_deref() != Some(self.me.as_str()) {
                self.status[e] = Status::Elsewhere;
                continue;
            }
            if self.status[e] != Status::Elsewhere {
                continue;
            }
            let left = self
                .previous
                .as_ref()
                .and_then(|previous| previous[e].clone())
                .filter(|was| *was != self.me && !view.members.contains(was));
            match left {
                Some(from) => {
                    self.status[e] = Status::Running;
                    started.push((e, Start::TakenOver { from }));
                }
                None => self.status[e] = Status::Waiting(now + self.delay),
            }
        }
        self.previous = Some(owners);
        self.revision = view.revision;
        started.extend(self.wake(now));
        (started, self.epochs())
    }

    /// Engines whose handover delay is over by `now` start running.
    pub fn wake(&mut self, now: Instant) -> Vec<(usize, Start)> {
        let mut started = Vec::new();
        for (e, status) in self.status.iter_mut().enumerate() {
            if matches!(*status, Status::Waiting(at) if at <= now) {
                *status = Status::Running;
                started.push((e, Start::AfterDelay));
            }
        }
        started
    }

    /// The next instant an engine's handover delay ends.
    pub fn next_wake(&self) -> Option<Instant> {
        self.status
            .iter()
            .filter_map(|status| match status {
                Status::Waiting(at) => Some(*at),
                _ => None,
            })
            .min()
    }

    /// Stop everything and forget the view: the lease could not be renewed in time.
    pub fn fence(&mut self) {
        self.previous = None;
        self.status.fill(Status::Elsewhere);
    }

    /// Each engine's epoch: the view's revision while this member runs it.
    pub fn epochs(&self) -> Vec<Option<i64>> {
        self.status
            .iter()
            .map(|status| (*status == Status::Running).then_some(self.revision))
            .collect()
    }

    /// The engines' names.
    pub fn engines(&self) -> &[String] {
        &self.engines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_secs(7);

    fn members(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn engines() -> Vec<String> {
        (0..30).map(|i| format!("engine-{i}")).collect()
    }

    fn owned_by(me: &str, all: &[&str]) -> Vec<bool> {
        engines()
            .iter()
            .map(|e| owner(e, &members(all)) == Some(me))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_view_waits_the_handover_delay_then_runs_its_share() {
        let mut book = Handover::new("b".into(), engines(), DELAY);
        let t0 = Instant::now();
        let view = View {
            revision: 5,
            members: members(&["a", "b", "c"]),
        };
        let (started, epochs) = book.view(&view, t0);
        assert!(
            started.is_empty(),
            "nothing at once: the owner before may still run it"
        );
        assert!(epochs.iter().all(Option::is_none));
        assert_eq!(book.next_wake(), Some(t0 + DELAY));
        let started = book.wake(t0 + DELAY);
        let mine = owned_by("b", &["a", "b", "c"]);
        assert_eq!(started.len(), mine.iter().filter(|&&m| m).count());
        assert!(started.iter().all(|(_, why)| *why == Start::AfterDelay));
        let epochs = book.epochs();
        for (e, owned) in mine.iter().enumerate() {
            assert_eq!(epochs[e], owned.then_some(5), "engine {e}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_member_gone_is_taken_over_at_once_and_only_its_engines_move() {
        let mut book = Handover::new("b".into(), engines(), DELAY);
        let t0 = Instant::now();
        book.view(
            &View {
                revision: 5,
                members: members(&["a", "b", "c"]),
            },
            t0,
        );
        book.wake(t0 + DELAY);
        let before = book.epochs();
        let (started, epochs) = book.view(
            &View {
                revision: 9,
                members: members(&["b", "c"]),
            },
            t0 + DELAY * 2,
        );
        let was_a = owned_by("a", &["a", "b", "c"]);
        let now_b = owned_by("b", &["b", "c"]);
        for (e, epoch) in epochs.iter().enumerate() {
            assert_eq!(epoch.is_some(), now_b[e], "engine {e}");
            if before[e].is_some() {
                assert_eq!(*epoch, Some(9), "still b's, under the new revision");
            }
        }
        assert!(!started.is_empty());
        for (e, why) in started {
            assert!(was_a[e], "only a's engines move");
            assert_eq!(why, Start::TakenOver { from: "a".into() });
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_engine_won_from_a_live_member_waits_and_a_fence_stops_everything() {
        let mut book = Handover::new("d".into(), engines(), DELAY);
        let t0 = Instant::now();
        book.view(
            &View {
                revision: 5,
                members: members(&["a", "b", "c", "d"]),
            },
            t0,
        );
        // A second view before the delay is over: still waiting (the others are alive).
        let (started, _) = book.view(
            &View {
                revision: 6,
                members: members(&["a", "b", "c", "d"]),
            },
            t0 + DELAY / 2,
        );
        assert!(started.is_empty());
        assert_eq!(book.next_wake(), Some(t0 + DELAY));
        assert!(!book.wake(t0 + DELAY).is_empty());
        book.fence();
        assert!(book.epochs().iter().all(Option::is_none));
        // Back after a fence: the others may have taken over meanwhile, so the delay again.
        let (started, _) = book.view(
            &View {
                revision: 12,
                members: members(&["a", "b", "c", "d"]),
            },
            t0 + DELAY * 3,
        );
        assert!(started.is_empty());
        assert_eq!(book.next_wake(), Some(t0 + DELAY * 4));
    }
}
