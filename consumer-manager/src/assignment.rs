//! Sticky partition assignment for consumer groups: balanced (owners differ by at
//! most one partition), and a member keeps what it owned when it can, so a rebalance
//! moves only the partitions it must.

use std::collections::BTreeMap;

/// Member id -> owned partitions (sorted).
pub(crate) type Assignment = BTreeMap<String, Vec<u32>>;

/// Assigns `partitions` partitions to `members` (ids, any order), starting from
/// `previous`. Every partition goes to exactly one member; with no members, none.
pub(crate) fn sticky(previous: &Assignment, members: &[String], partitions: u32) -> Assignment {
    let mut members: Vec<&String> = members.iter().collect();
    members.sort();
    members.dedup();
    let mut result: Assignment = members.iter().map(|m| ((*m).clone(), Vec::new())).collect();
    if members.is_empty() {
        return result;
    }
    let count = members.len();
    let base = partitions as usize / count;
    let extra = partitions as usize % count;
    // Members that owned the most keep the larger quotas, so fewer partitions move.
    let mut by_previous: Vec<&String> = members.clone();
    by_previous.sort_by_key(|m| std::cmp::Reverse(previous.get(*m).map_or(0, |owned| owned.len())));
    let quota: BTreeMap<&String, usize> = by_previous
        .iter()
        .enumerate()
        .map(|(rank, m)| (*m, base + usize::from(rank < extra)))
        .collect();
    let mut taken = vec![false; partitions as usize];
    for member in &members {
        let owned = result.get_mut(*member).expect("every member has an entry");
        for &partition in previous.get(*member).into_iter().flatten() {
            let index = partition as usize;
            if index < taken.len() && !taken[index] && owned.len() < quota[member] {
                taken[index] = true;
                owned.push(partition);
            }
        }
    }
    let mut free = (0..partitions).filter(|&p| !taken[p as usize]);
    for member in &members {
        let owned = result.get_mut(*member).expect("every member has an entry");
        while owned.len() < quota[member] {
            match free.next() {
                Some(partition) => owned.push(partition),
                None => break,
            }
        }
        owned.sort_unstable();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("m{i}")).collect()
    }

    fn check(assignment: &Assignment, partitions: u32) {
        let mut all: Vec<u32> = assignment.values().flatten().copied().collect();
        all.sort_unstable();
        if assignment.is_empty() {
            assert!(all.is_empty());
            return;
        }
        assert_eq!(
            all,
            (0..partitions).collect::<Vec<_>>(),
            "each partition exactly once"
        );
        let sizes: Vec<usize> = assignment.values().map(Vec::len).collect();
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(max - min <= 1, "balanced: {sizes:?}");
    }

    #[test]
    fn three_members_share_six_partitions() {
        let a = sticky(&Assignment::new(), &names(3), 6);
        check(&a, 6);
        assert_eq!(a["m0"], vec![0, 1]);
    }

    #[test]
    fn a_departure_moves_only_the_departed_members_partitions() {
        let before = sticky(&Assignment::new(), &names(3), 6);
        let after = sticky(&before, &names(2), 6);
        check(&after, 6);
        for member in ["m0", "m1"] {
            for p in &before[member] {
                assert!(after[member].contains(p), "{member} kept {p}");
            }
        }
    }

    #[test]
    fn no_members_means_no_owners() {
        assert!(sticky(&Assignment::new(), &[], 4).is_empty());
    }

    proptest! {
        #[test]
        fn every_assignment_is_complete_and_balanced(
            steps in proptest::collection::vec((1usize..6, 0u32..20), 1..10)
        ) {
            let mut current = Assignment::new();
            for (members, partitions) in steps {
                current = sticky(&current, &names(members), partitions);
                check(&current, partitions);
            }
        }
    }
}
