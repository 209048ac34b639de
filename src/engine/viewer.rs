//! Who is asking: results belong to the certificate identity that submitted them, and only it
//! (or a caller in the same process) may read, release or be notified of them.

use std::sync::Arc;

/// Who is asking, for results that belong to a certificate identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Viewer {
    /// A caller in the same process: sees everything.
    Local,
    /// A network peer, with its certificate name if it showed one.
    Peer(Option<Arc<str>>),
}

impl Viewer {
    /// Whether this viewer may read or release a task owned by `owner`.
    pub(crate) fn may_see(&self, owner: Option<&Arc<str>>) -> bool {
        match (self, owner) {
            (_, None) | (Viewer::Local, _) => true,
            (Viewer::Peer(name), Some(owner)) => name.as_deref() == Some(&**owner),
        }
    }

    /// The owner of a task this viewer submits.
    pub(crate) fn owner(&self) -> Option<Arc<str>> {
        match self {
            Viewer::Local => None,
            Viewer::Peer(name) => name.clone(),
        }
    }
}
