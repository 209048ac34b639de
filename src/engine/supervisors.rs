//! Whose tasks are whose: the supervisor each held task was submitted by (its `supervisor_id`),
//! an index of task ids per supervisor that `ListTasks` pages through in id order, and each
//! supervisor's marks (the latest scheduled instant it has sent per relator), which tell a
//! restarted supervisor where its timeline stood.
//!
//! Everything here is bounded whatever clients send: at most [`MAX_SUPERVISORS`] supervisor ids
//! (one with no task held is forgotten to make room), [`MAX_MARKS_PER_SUPERVISOR`] relators
//! marked per supervisor and [`MAX_SHARED_NAMES`] relator and rule names shared between tasks.
//!
//! Nothing here allocates per task on the hot path beyond what it keeps: the id index shares the
//! task map's id and only appends to it (it is sorted when a page is asked for, which is rare:
//! a supervisor lists its tasks when it starts or takes an engine over), a mark is looked up by
//! the relator's name as sent, and the relator and rule names of an origin are shared by every
//! task that carries them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::proto;

use super::viewer::Viewer;

/// Distinct supervisor ids an engine keeps track of.
pub(crate) const MAX_SUPERVISORS: usize = 4096;

/// Relators marked per supervisor; a relator beyond this is not marked (a restart of that
/// supervisor then treats it as new).
pub(crate) const MAX_MARKS_PER_SUPERVISOR: usize = 10_000;

/// Distinct relator and rule names shared between tasks (over every supervisor); beyond this a
/// task keeps a copy of its own.
pub(crate) const MAX_SHARED_NAMES: usize = 65_536;

/// Longer names are not shared (each task keeps its own copy), so the shared set stays within a
/// few megabytes whatever clients send.
const MAX_SHARED_NAME_BYTES: usize = 128;

/// foldhash, seeded per map: the keys are names clients choose.
type Hasher = foldhash::fast::RandomState;

/// What a task is and who sent it, kept with a task submitted with a `supervisor_id`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Origin {
    /// The supervisor's id, shared by all its tasks.
    pub(crate) supervisor: Arc<str>,
    /// Shared by every task of the relator.
    pub(crate) relator: Arc<str>,
    /// Shared by every task of the rule.
    pub(crate) rule: Arc<str>,
    pub(crate) node: Box<str>,
    pub(crate) scheduled_unix_ms: i64,
}

/// The marks of one relator: per certificate that sent its tasks (only it, or a caller in
/// process, reads the mark; `None`: anyone), the latest scheduled instant. Almost always one.
type RelatorMarks = Vec<(Option<Arc<str>>, i64)>;

/// Ids no longer held that an index carries before it is compacted, beyond as many as are held.
const INDEX_SLACK: usize = 1024;

/// One supervisor's task ids (the task map's own): a sorted run and the ids added since it was
/// sorted. A released id is not looked for: it stays until the next compaction, and whoever
/// reads the index checks that an id is still held (and still this supervisor's).
#[derive(Debug, Default)]
struct IdIndex {
    sorted: Vec<Arc<str>>,
    added: Vec<Arc<str>>,
    /// Ids held now.
    live: usize,
}

impl IdIndex {
    /// Whether ids no longer held outnumber those held (by more than the slack).
    fn needs_compaction(&self) -> bool {
        self.sorted.len() + self.added.len() > 2 * self.live + INDEX_SLACK
    }

    /// Keep only the ids `is_live` holds, merge the added ones in: sorted, each once.
    fn rebuild(&mut self, is_live: &dyn Fn(&str) -> bool) {
        let mut ids = std::mem::take(&mut self.sorted);
        ids.append(&mut self.added);
        ids.retain(|id| is_live(id));
        ids.sort_unstable();
        ids.dedup();
        self.live = ids.len();
        self.sorted = ids;
    }
}

/// One supervisor's held task ids and its marks by relator.
#[derive(Debug, Default)]
struct Held {
    ids: IdIndex,
    marks: HashMap<Box<str>, RelatorMarks, Hasher>,
    /// Marks over every relator and certificate.
    mark_count: usize,
}

/// Every supervisor the engine holds tasks or marks for.
#[derive(Debug, Default)]
pub(crate) struct Supervisors {
    by_id: HashMap<Arc<str>, Held, Hasher>,
    /// Marks raised since the last [`Supervisors::take_dirty`], for the journal.
    dirty: HashSet<(Arc<str>, Box<str>), Hasher>,
    /// Relator and rule names shared between tasks (at most [`MAX_SHARED_NAMES`]).
    names: HashSet<Arc<str>, Hasher>,
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
                .find(|(_, held)| held.ids.live == 0)
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

    /// `name` (a relator's or a rule's) shared with the tasks already holding it; a copy of its
    /// own once [`MAX_SHARED_NAMES`] names are shared, or for a name over 128 bytes.
    pub(crate) fn name(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.names.get(name) {
            return Arc::clone(shared);
        }
        let name: Arc<str> = Arc::from(name);
        if self.names.len() < MAX_SHARED_NAMES && name.len() <= MAX_SHARED_NAME_BYTES {
            self.names.insert(Arc::clone(&name));
        }
        name
    }

    /// Indexes `task_id` (the task map's key, newly held) under its supervisor. True when the
    /// index now carries more released ids than the slack allows: the caller compacts it
    /// ([`Supervisors::compact`]).
    pub(crate) fn insert(&mut self, task_id: &Arc<str>, origin: &Origin) -> bool {
        match self.by_id.get_mut(&origin.supervisor) {
            Some(held) => {
                held.ids.added.push(Arc::clone(task_id));
                held.ids.live += 1;
                held.ids.needs_compaction()
            }
            None => false,
        }
    }

    /// A task of `origin`'s supervisor is no longer held (its id leaves the index at the next
    /// compaction).
    pub(crate) fn remove(&mut self, origin: &Origin) {
        if let Some(held) = self.by_id.get_mut(&origin.supervisor) {
            held.ids.live = held.ids.live.saturating_sub(1);
        }
    }

    /// Drops from `supervisor`'s index every id `is_live` says it no longer holds.
    pub(crate) fn compact(&mut self, supervisor: &str, is_live: &dyn Fn(&str) -> bool) {
        if let Some(held) = self.by_id.get_mut(supervisor) {
            held.ids.rebuild(is_live);
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
        let room = held.mark_count < MAX_MARKS_PER_SUPERVISOR;
        match held.marks.get_mut(relator) {
            Some(owners) => match owners.iter_mut().find(|(marked, _)| *marked == owner) {
                Some((_, mark)) if *mark >= scheduled_unix_ms => return false,
                Some((_, mark)) => *mark = scheduled_unix_ms,
                None if !room => return false,
                None => {
                    owners.push((owner, scheduled_unix_ms));
                    held.mark_count += 1;
                }
            },
            None if !room => return false,
            None => {
                held.marks
                    .insert(relator.into(), vec![(owner, scheduled_unix_ms)]);
                held.mark_count += 1;
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
                    .get(&relator)?
                    .iter()
                    .map(|(_, at)| *at)
                    .max()?;
                Some((supervisor, relator, latest))
            })
            .collect()
    }

    /// The ids indexed for `supervisor` that sort (bytewise) after `after_id`, in order. The
    /// index is sorted first if ids were added since, or compacted (`is_live` says which ids
    /// are still held) on a first page; an id released since may still come: check it.
    pub(crate) fn ids_after<'a>(
        &'a mut self,
        supervisor: &str,
        after_id: &str,
        is_live: &dyn Fn(&str) -> bool,
    ) -> impl Iterator<Item = &'a Arc<str>> + 'a {
        let ids: &'a [Arc<str>] = match self.by_id.get_mut(supervisor) {
            Some(held) => {
                if after_id.is_empty() || !held.ids.added.is_empty() {
                    held.ids.rebuild(is_live);
                }
                let start = held
                    .ids
                    .sorted
                    .partition_point(|id| after_id.as_bytes() >= id.as_bytes());
                &held.ids.sorted[start..]
            }
            None => &[],
        };
        ids.iter()
    }

    /// The marks of `supervisor` that `viewer` may read, by relator name.
    pub(crate) fn marks(&self, supervisor: &str, viewer: &Viewer) -> Vec<proto::RelatorMark> {
        let Some(held) = self.by_id.get(supervisor) else {
            return Vec::new();
        };
        let mut marks: Vec<proto::RelatorMark> = held
            .marks
            .iter()
            .filter_map(|(relator, owners)| {
                let latest = owners
                    .iter()
                    .filter(|(owner, _)| viewer.may_see(owner.as_ref()))
                    .map(|(_, at)| *at)
                    .max()?;
                Some(proto::RelatorMark {
                    relator: relator.to_string(),
                    latest_scheduled_unix_ms: latest,
                })
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
            supervisors.insert(&Arc::from(id), &a);
        }
        supervisors.insert(&Arc::from("x"), &b);
        let held = std::cell::RefCell::new(vec!["t1", "t2", "t3", "x"]);
        let is_live = |id: &str| held.borrow().contains(&id);
        let ids = |supervisors: &mut Supervisors, after: &str| -> Vec<String> {
            supervisors
                .ids_after("a", after, &is_live)
                .map(|id| id.to_string())
                .collect()
        };
        assert_eq!(ids(&mut supervisors, ""), ["t1", "t2", "t3"]);
        assert_eq!(ids(&mut supervisors, "t1"), ["t2", "t3"]);
        assert_eq!(ids(&mut supervisors, "t3"), Vec::<String>::new());
        assert_eq!(supervisors.ids_after("c", "", &is_live).count(), 0);
        // Released: gone from the next first page.
        supervisors.remove(&a);
        held.borrow_mut().retain(|id| *id != "t2");
        assert_eq!(ids(&mut supervisors, ""), ["t1", "t3"]);
        // Added between two pages: sorted in before the next one.
        supervisors.insert(&Arc::from("t0"), &a);
        supervisors.insert(&Arc::from("t4"), &a);
        held.borrow_mut().extend(["t0", "t4"]);
        assert_eq!(ids(&mut supervisors, "t1"), ["t3", "t4"]);
        assert_eq!(ids(&mut supervisors, ""), ["t0", "t1", "t3", "t4"]);
    }

    #[test]
    fn released_ids_are_compacted_away_once_they_outnumber_the_held_ones() {
        let mut supervisors = Supervisors::default();
        let a = origin(&mut supervisors, "a");
        let mut asked = false;
        for i in 0..(2 * INDEX_SLACK) {
            let id: Arc<str> = Arc::from(format!("t{i:05}"));
            if supervisors.insert(&id, &a) {
                asked = true;
                // Only the newest id is still held.
                let newest = Arc::clone(&id);
                supervisors.compact("a", &|held| held == &*newest);
            }
            supervisors.remove(&a);
        }
        assert!(asked, "the index asked to be compacted");
        let held = &supervisors.by_id["a"].ids;
        assert!(held.sorted.len() + held.added.len() <= INDEX_SLACK + 1);
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
                supervisors.insert(&Arc::from("t"), &o);
            }
        }
        // s0 holds nothing: it is forgotten for the newcomer.
        assert!(supervisors.intern("new").is_ok());
        let o = origin(&mut supervisors, "new");
        supervisors.insert(&Arc::from("t"), &o);
        assert!(supervisors.intern("another").is_err());
    }

    #[test]
    fn names_are_shared_up_to_the_cap_then_copied() {
        let mut supervisors = Supervisors::default();
        let first = supervisors.name("relator");
        assert!(Arc::ptr_eq(&first, &supervisors.name("relator")));
        for i in 1..MAX_SHARED_NAMES {
            supervisors.name(&format!("n{i}"));
        }
        let long = "x".repeat(MAX_SHARED_NAME_BYTES + 1);
        assert!(!Arc::ptr_eq(
            &supervisors.name(&long),
            &supervisors.name(&long)
        ));
        let late = supervisors.name("late");
        assert_eq!(&*late, "late");
        assert!(!Arc::ptr_eq(&late, &supervisors.name("late")));
        assert!(Arc::ptr_eq(&first, &supervisors.name("relator")));
    }
}
