use super::*;

#[test]
fn a_replaced_owners_late_writes_are_skipped_and_lone_writes_applied() {
    let mut highest = 0;
    let applied: Vec<bool> = [
        Some(1),
        None,
        Some(2),
        Some(1),
        None,
        Some(2),
        Some(3),
        Some(2),
    ]
    .into_iter()
    .map(|epoch| current(epoch, &mut highest))
    .collect();
    assert_eq!(applied, [true, true, true, false, true, true, true, false]);
    assert_eq!(highest, 3);
}
