//! The sweep behind [`Schedule::shifts`](super::Schedule::shifts) and
//! [`Schedule::gaps`](super::Schedule::gaps): a range cut into pieces in which the same users are
//! on call.
//!
//! Each rotation first lists where it applies and who it puts on call ([`Rotation::segments`]);
//! every edge of those and of the overrides cuts the range; in each piece the rotations are asked
//! in the order they decide, through one cursor each, so the sweep costs
//! O(pieces × rotations) and resolves no wall-clock time of its own. The answer in every piece is
//! the one [`Schedule::on_call`](super::Schedule::on_call) gives at any instant in it.

use jiff::Timestamp;
use uuid::Uuid;

use super::overrides::{self, Placed};
use super::rotation::{Rotation, Segment};
use super::zone::Zone;

/// `[start, end)` with the same users on call throughout (none in a gap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Piece {
    pub start: Timestamp,
    pub end: Timestamp,
    pub users: Vec<Uuid>,
}

/// `[from, to)` cut into pieces, in order, tiling it; neighbours have different users.
/// `rotations` are in the order they decide.
pub(super) fn pieces(
    zone: &Zone,
    rotations: &[Rotation],
    overrides: &[Placed],
    from: Timestamp,
    to: Timestamp,
) -> Vec<Piece> {
    let layers: Vec<Vec<Segment>> = rotations
        .iter()
        .map(|rotation| rotation.segments(zone, from, to))
        .collect();
    let overrides: Vec<Placed> = overrides
        .iter()
        .filter(|o| o.start < to && from < o.end)
        .copied()
        .collect();

    let mut cuts = vec![from, to];
    cuts.extend(layers.iter().flatten().flat_map(|s| [s.start, s.end]));
    cuts.extend(
        overrides
            .iter()
            .flat_map(|o| [o.start, o.end])
            .filter(|&at| from < at && at < to),
    );
    cuts.sort_unstable();
    cuts.dedup();

    let mut cursors = vec![0; layers.len()];
    let mut pieces: Vec<Piece> = Vec::new();
    for edge in cuts.windows(2) {
        let (start, end) = (edge[0], edge[1]);
        let layered = layers
            .iter()
            .zip(cursors.iter_mut())
            .find_map(|(segments, cursor)| {
                while segments.get(*cursor).is_some_and(|s| s.end <= start) {
                    *cursor += 1;
                }
                segments
                    .get(*cursor)
                    .filter(|s| s.start <= start)
                    .map(|s| s.user)
            });
        let users = overrides::apply(&overrides, start, layered);
        match pieces.last_mut() {
            Some(last) if last.users == users => last.end = end,
            _ => pieces.push(Piece { start, end, users }),
        }
    }
    pieces
}
