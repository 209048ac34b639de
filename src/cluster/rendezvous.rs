//! Rendezvous (highest random weight) hashing: each engine goes to the live member with the
//! highest stable hash of (member, engine). Every member computes the same owner from the same
//! member list, with no coordination; a member joining takes only the engines it now wins, and a
//! member leaving hands only its own engines to the others, each to its runner-up.

use crate::supervisor::schedule::splay::stable_hash;

/// The member that owns `engine` among `members` (none when there is no member). Ties, which
/// need a 64-bit collision, go to the smaller name.
pub fn owner<'m>(engine: &str, members: &'m [String]) -> Option<&'m str> {
    members
        .iter()
        .map(|member| {
            (
                stable_hash(&["turbomon-rendezvous", member, engine]),
                member,
            )
        })
        .max_by(|(a, ma), (b, mb)| a.cmp(b).then_with(|| mb.cmp(ma)))
        .map(|(_, member)| member.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    #[test]
    fn engines_spread_over_the_members_and_a_member_leaving_moves_only_its_own() {
        let engines = names("engine-", 300);
        let members = names("sup-", 3);
        let before: Vec<&str> = engines
            .iter()
            .map(|e| owner(e, &members).expect("a member"))
            .collect();
        for member in &members {
            let share = before.iter().filter(|&&o| o == member).count();
            assert!((60..=140).contains(&share), "{member} owns {share} of 300");
        }
        let survivors: Vec<String> = members[..2].to_vec();
        for (engine, old) in engines.iter().zip(&before) {
            let new = owner(engine, &survivors).expect("a member");
            if *old != "sup-2" {
                assert_eq!(new, *old, "{engine} stays where it was");
            }
        }
    }

    #[test]
    fn a_member_joining_takes_only_what_it_wins() {
        let engines = names("e", 200);
        let members = names("m", 4);
        let mut joined = members.clone();
        joined.push("m-new".into());
        let mut moved = 0;
        for engine in &engines {
            let old = owner(engine, &members).expect("a member");
            let new = owner(engine, &joined).expect("a member");
            if old != new {
                assert_eq!(new, "m-new", "{engine} moved between old members");
                moved += 1;
            }
        }
        assert!(
            (15..=70).contains(&moved),
            "{moved} of 200 moved to the fifth member"
        );
        assert_eq!(owner("e", &[]), None);
    }

    #[test]
    fn the_owner_does_not_depend_on_the_order_members_are_listed_in() {
        let members = names("m", 5);
        let mut reversed = members.clone();
        reversed.reverse();
        for engine in names("e", 50) {
            assert_eq!(owner(&engine, &members), owner(&engine, &reversed));
        }
    }
}
