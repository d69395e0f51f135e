//! Worker commands: register, change state, report images. Each command's check,
//! then its effect.

use super::*;

pub(super) fn apply_register(s: &mut ClusterState, worker: &WorkerRecord) -> Response {
    let incarnation = s.workers.get(&worker.id).map_or(0, |w| w.incarnation) + 1;
    let mut w = worker.clone();
    w.images = Arc::new(bound(worker.images.to_vec()).images);
    w.incarnation = incarnation;
    w.state = WorkerState::Alive;
    w.state_since_ms = w.registered_at_ms;
    s.workers.insert(w.id.clone(), w);
    Response::Done
}

/// Both `SetWorkerState` and `SetWorkerImages` need a registered worker.
pub(super) fn check_known(s: &ClusterState, id: &str) -> Result<(), CommandError> {
    if !s.workers.contains_key(id) {
        return Err(CommandError::WorkerNotFound(id.to_string()));
    }
    Ok(())
}

pub(super) fn apply_set_state(
    s: &mut ClusterState,
    id: &str,
    state: WorkerState,
    at_ms: u64,
) -> Response {
    let w = s.workers.get_mut(id).expect("checked");
    if w.state != state {
        w.state = state;
        w.state_since_ms = at_ms;
    }
    Response::Done
}

pub(super) fn apply_set_images(s: &mut ClusterState, id: &str, images: &[ImageInfo]) -> Response {
    let w = s.workers.get_mut(id).expect("checked");
    w.images = Arc::new(bound(images.to_vec()).images);
    Response::Done
}
