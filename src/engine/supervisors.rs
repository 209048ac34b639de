//! Whose tasks are whose: the supervisor each held task was submitted by (its `supervisor_id`),
//! an ordered index of task ids per supervisor that `ListTasks` pages through, and each
//! supervisor's marks (the latest scheduled instant it has sent per relator), which tell a
//! restarted supervisor where its timeline stood.
//!
//! Everything here is bounded whatever clients send: at most [`MAX_SUPERVISORS`] supervisor ids
//! (one with no task held is forgotten to make room) and [`MAX_MARKS_PER_SUPERVISOR`] relators
//! marked per supervisor.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use crate::proto;

use super::viewer::Viewer;

/// Distinct supervisor ids an engine keeps track of.
pub(crate) const MAX_SUPERVISORS: usize = 4096;

/// Relators marked per supervisor; a relator beyond this is not marked (a restart of that
/// supervisor then treats it as new).
pub(crate) const MAX_MARKS_PER_SUPERVISOR: usize = 10_000;

/// What a task is and who sent it, kept with a task submitted with a `supervisor_id`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Origin {
    /// The supervisor's id, shared by all its tasks.
    pub(crate) supervisor: Arc<str>,
    pub(crate) relator: Box<str>,
    pub(crate) rule: Box<str>,
    pub(crate) node: Box<str>,
    pub(crate) scheduled_unix_ms: i64,
}

/// Whose mark: the certificate name that sent the tasks (only it, or a caller in process,
/// reads the mark; `None`: anyone), and the relator.
type MarkKey = (Option<Arc<str>>, Box<str>);

/// One supervisor's held task ids (ordered, for paging) and its marks: the latest scheduled
/// instant sent per relator.
#[derive(Debug, Default)]
struct Held {
    ids: BTreeSet<String>,
    marks: HashMap<MarkKey, i64>,
}

/// Every supervisor the engine holds tasks or marks for.
#[derive(Debug, Default)]
pub(crate) struct Supervisors {
    by_id: HashMap<Arc<str>, Held>,
    /// Marks raised since the last [`Supervisors::take_dirty`], for the journal.
    dirty: HashSet<(Arc<str>, Box<str>)>,
}

impl Supervisors {
    /// The shared id for `supervisor`, tracked from now on. Refused (with the reason) when
    /// [`MAX_SUPERVISORS`] ids are tracked and each of them still has tasks held.
    pub(crate) fn intern(&mut self, supervisor: &str) -> Result<Arc<str>, String> {
        if let Some((id, _)) = self.by_id.get_key_value(supervisor) {
            return Ok(Arc::clone(id));
        }
        if self.by_id.len() >= MAX_SUPERVISORS {
            let idle = self
                .by_id
                .iter()
                .find(|(_, held)| held.ids.is_empty())
                .map(|(id, _)| Arc::clone(id));
            match idle {
                Some(idle) => {
                    self.by_id.remove(&idle);
                    self.dirty.retain(|(id, _)| *id != idle);
                }
                None => {
                    return Err(format!(
                        "engine holds tasks for {MAX_SUPERVISORS} supervisor ids already"
                    ));
                }
            }
        }
        let id: Arc<str> = Arc::from(supervisor);
        self.by_id.insert(Arc::clone(&id), Held::default());
        Ok(id)
    }

    /// Indexes `task_id` under its supervisor.
    pub(crate) fn insert(&mut self, task_id: &str, origin: &Origin) {
        if let Some(held) = self.by_id.get_mut(&origin.supervisor) {
            held.ids.insert(task_id.to_string());
        }
    }

    /// Takes `task_id` out of its supervisor's index.
    pub(crate) fn remove(&mut self, task_id: &str, origin: &Origin) {
        if let Some(held) = self.by_id.get_mut(&origin.supervisor) {
            held.ids.remove(task_id);
        }
    }

    /// Raises the mark of (`supervisor`, `relator`) sent by certificate `owner` to
    /// `scheduled_unix_ms` if it is later; true when it was raised (it is then also queued for
    /// the journal).
    pub(crate) fn mark(
        &mut self,
        supervisor: &Arc<str>,
        relator: &str,
        scheduled_unix_ms: i64,
        owner: Option<Arc<str>>,
    ) -> bool {
        let Some(held) = self.by_id.get_mut(supervisor) else {
            return false;
        };
        let room = held.marks.len() < MAX_MARKS_PER_SUPERVISOR;
        let key: MarkKey = (owner, relator.into());
        match held.marks.get_mut(&key) {
            Some(mark) if *mark >= scheduled_unix_ms => return false,
            Some(mark) => *mark = scheduled_unix_ms,
            None if !room => return false,
            None => {
                held.marks.insert(key, scheduled_unix_ms);
            }
        }
        self.dirty.insert((Arc::clone(supervisor), relator.into()));
        true
    }

    /// Takes a mark back from the journal (no owner: the journal keeps none).
    pub(crate) fn restore_mark(&mut self, supervisor: &str, relator: &str, scheduled_unix_ms: i64) {
        if let Ok(supervisor) = self.intern(supervisor) {
            self.mark(&supervisor, relator, scheduled_unix_ms, None);
        }
    }

    /// The marks raised since the last call, with their values now (the latest over every
    /// certificate: the journal keeps no owner), for the journal.
    pub(crate) fn take_dirty(&mut self) -> Vec<(Arc<str>, Box<str>, i64)> {
        if self.dirty.is_empty() {
            return Vec::new();
        }
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|(supervisor, relator)| {
                let latest = self
                    .by_id
                    .get(&supervisor)?
                    .marks
                    .iter()
                    .filter(|((_, marked), _)| *marked == relator)
                    .map(|(_, at)| *at)
                    .max()?;
                Some((supervisor, relator, latest))
            })
            .collect()
    }

    /// The ids held for `supervisor` that sort after `after_id`, in order.
    pub(crate) fn ids_after<'a>(
        &'a self,
        supervisor: &str,
        after_id: &'a str,
    ) -> impl Iterator<Item = &'a String> + 'a {
        let lower = if after_id.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(after_id)
        };
        self.by_id
            .get(supervisor)
            .into_iter()
            .flat_map(move |held| held.ids.range::<str, _>((lower, Bound::Unbounded)))
    }

    /// The marks of `supervisor` that `viewer` may read, by relator name.
    pub(crate) fn marks(&self, supervisor: &str, viewer: &Viewer) -> Vec<proto::RelatorMark> {
        let Some(held) = self.by_id.get(supervisor) else {
            return Vec::new();
        };
        let mut latest: HashMap<&str, i64> = HashMap::new();
        for ((owner, relator), at) in &held.marks {
            if viewer.may_see(owner.as_ref()) {
                let mark = latest.entry(relator).or_insert(*at);
                *mark = (*mark).max(*at);
            }
        }
        let mut marks: Vec<proto::RelatorMark> = latest
            .into_iter()
            .map(|(relator, at)| proto::RelatorMark {
                relator: relator.to_string(),
                latest_scheduled_unix_ms: at,
            })
            .collect();
        marks.sort_by(|a, b| a.relator.cmp(&b.relator));
        marks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(supervisors: &mut Supervisors, supervisor: &str) -> Origin {
        Origin {
            supervisor: supervisors.intern(supervisor).unwrap(),
            relator: "r".into(),
            rule: "u".into(),
            node: "n".into(),
            scheduled_unix_ms: 1,
        }
    }

    #[test]
    fn ids_page_in_order_after_the_token_and_only_for_their_supervisor() {
        let mut supervisors = Supervisors::default();
        let a = origin(&mut supervisors, "a");
        let b = origin(&mut supervisors, "b");
        for id in ["t3", "t1", "t2"] {
            supervisors.insert(id, &a);
        }
        supervisors.insert("x", &b);
        let all: Vec<&String> = supervisors.ids_after("a", "").collect();
        assert_eq!(all, ["t1", "t2", "t3"]);
        let rest: Vec<&String> = supervisors.ids_after("a", "t1").collect();
        assert_eq!(rest, ["t2", "t3"]);
        assert_eq!(supervisors.ids_after("c", "").count(), 0);
        supervisors.remove("t2", &a);
        let left: Vec<&String> = supervisors.ids_after("a", "").collect();
        assert_eq!(left, ["t1", "t3"]);
    }

    #[test]
    fn marks_only_rise_and_are_read_by_their_owner() {
        let mut supervisors = Supervisors::default();
        let a = supervisors.intern("a").unwrap();
        let owner: Option<Arc<str>> = Some(Arc::from("cert-a"));
        assert!(supervisors.mark(&a, "r", 100, owner.clone()));
        assert!(!supervisors.mark(&a, "r", 50, owner.clone()));
        assert!(supervisors.mark(&a, "r", 200, owner));
        // Another certificate claiming the same id keeps a mark of its own.
        assert!(supervisors.mark(&a, "r", 150, Some(Arc::from("cert-c"))));
        assert_eq!(
            supervisors.take_dirty(),
            vec![(Arc::clone(&a), "r".into(), 200)]
        );
        assert!(supervisors.take_dirty().is_empty());
        let local = supervisors.marks("a", &Viewer::Local);
        assert_eq!(local[0].latest_scheduled_unix_ms, 200);
        assert!(
            supervisors
                .marks("a", &Viewer::Peer(Some(Arc::from("cert-b"))))
                .is_empty()
        );
        let theirs = supervisors.marks("a", &Viewer::Peer(Some(Arc::from("cert-c"))));
        assert_eq!(theirs[0].latest_scheduled_unix_ms, 150);
    }

    #[test]
    fn at_the_cap_an_idle_supervisor_makes_room_and_a_busy_set_refuses() {
        let mut supervisors = Supervisors::default();
        for i in 0..MAX_SUPERVISORS {
            let o = origin(&mut supervisors, &format!("s{i}"));
            if i > 0 {
                supervisors.insert("t", &o);
            }
        }
        // s0 holds nothing: it is forgotten for the newcomer.
        assert!(supervisors.intern("new").is_ok());
        let o = origin(&mut supervisors, "new");
        supervisors.insert("t", &o);
        assert!(supervisors.intern("another").is_err());
    }
}
