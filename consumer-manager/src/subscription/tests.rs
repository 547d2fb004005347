//! A subscription's decisions together, against a model: members joining and leaving
//! (a group rebalancing), claims of redeliveries and new records, acks, nacks and
//! lease expiry, in any order. These are the decisions the subscription's lock
//! serializes; each is a synchronous function of the state, so a random sequence of
//! them can be checked step by step against a plain model of every delivered record.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::command::{Command, apply};
use crate::delivery::plan;
use crate::store::SubscriptionRecord;

const PARTITIONS: u32 = 3;
const MEMBERS: usize = 3;
/// Lease length in ms: odd, while time moves in steps of 10 ms, so no deadline ever
/// falls exactly on "now" and the model need not know which side of it counts.
const LEASE_MS: u64 = 101;

#[derive(Clone, Debug)]
enum Op {
    /// Member joins (or renews), reading by stream or by pull.
    Join {
        member: usize,
        stream: bool,
    },
    Leave {
        member: usize,
    },
    /// Member claims up to `max` records, taking up to `new` new records a partition.
    Claim {
        member: usize,
        max: usize,
        new: u64,
    },
    Ack {
        partition: u32,
        offset: u64,
    },
    Nack {
        member: usize,
        partition: u32,
        offset: u64,
    },
    /// Time moves on by this many 10 ms steps.
    Wait {
        steps: u64,
    },
    ExpireAll,
}

fn op() -> impl Strategy<Value = Op> {
    let member = 0..MEMBERS;
    let partition = 0..PARTITIONS;
    prop_oneof![
        (member.clone(), any::<bool>()).prop_map(|(member, stream)| Op::Join { member, stream }),
        member.clone().prop_map(|member| Op::Leave { member }),
        (member.clone(), 1usize..8, 0u64..4).prop_map(|(member, max, new)| Op::Claim {
            member,
            max,
            new
        }),
        (member.clone(), 1usize..8, 0u64..4).prop_map(|(member, max, new)| Op::Claim {
            member,
            max,
            new
        }),
        (partition.clone(), 0u64..24).prop_map(|(partition, offset)| Op::Ack { partition, offset }),
        (member, partition, 0u64..24).prop_map(|(member, partition, offset)| Op::Nack {
            member,
            partition,
            offset
        }),
        (0u64..16).prop_map(|steps| Op::Wait { steps }),
        Just(Op::ExpireAll),
    ]
}

/// What the model knows of one delivered record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Record {
    Leased { holder: Holder, deadline: Instant },
    Waiting,
    Acked,
}

/// The model: every delivered record of every partition, its delivery count, and the
/// members with their holders and modes.
struct Model {
    records: Vec<Vec<Record>>,
    deliveries: Vec<Vec<u32>>,
    members: BTreeMap<String, (Holder, Mode)>,
    generation: u64,
}

impl Model {
    fn new() -> Self {
        Model {
            records: vec![Vec::new(); PARTITIONS as usize],
            deliveries: vec![Vec::new(); PARTITIONS as usize],
            members: BTreeMap::new(),
            generation: 0,
        }
    }

    fn expire(&mut self, partition: usize, now: Instant) {
        for record in &mut self.records[partition] {
            if matches!(*record, Record::Leased { deadline, .. } if deadline <= now) {
                *record = Record::Waiting;
            }
        }
    }

    fn release(&mut self, partition: usize, holder: Holder) {
        for record in &mut self.records[partition] {
            if matches!(*record, Record::Leased { holder: h, .. } if h == holder) {
                *record = Record::Waiting;
            }
        }
    }

    /// The first `room` records waiting for redelivery, leased to `holder`.
    fn claim(
        &mut self,
        partition: usize,
        room: usize,
        holder: Holder,
        deadline: Instant,
    ) -> Vec<(u32, u64, u32)> {
        let mut claimed = Vec::new();
        for (offset, record) in self.records[partition].iter_mut().enumerate() {
            if claimed.len() == room {
                break;
            }
            if *record == Record::Waiting {
                *record = Record::Leased { holder, deadline };
                self.deliveries[partition][offset] += 1;
                let attempt = self.deliveries[partition][offset];
                claimed.push((partition as u32, offset as u64, attempt));
            }
        }
        claimed
    }
}

fn owner_of(assignment: &Assignment, partition: u32) -> Option<&String> {
    assignment
        .iter()
        .find(|(_, owned)| owned.contains(&partition))
        .map(|(id, _)| id)
}

/// Runs one operation on the real state and on the model.
fn step(
    subscription: &Subscription,
    state: &mut State,
    model: &mut Model,
    op: &Op,
    now: &mut Instant,
    holders: &mut Holder,
) {
    let group = subscription.options.group;
    let name = |member: usize| format!("m{member}");
    match *op {
        Op::Join { member, stream } => {
            let mode = if stream { Mode::Stream } else { Mode::Pull };
            let before = state.assignment.clone();
            let (holder, new) = state.touch(&name(member), "a", mode, || {
                *holders += 1;
                *holders
            });
            if new {
                model.members.insert(name(member), (holder, mode));
                if group {
                    state.rebalance(PARTITIONS);
                    model.generation += 1;
                    model_rebalance(model, &before, &state.assignment);
                }
            }
        }
        Op::Leave { member } => {
            let before = state.assignment.clone();
            let removed = state.remove(&name(member), group);
            let known = model.members.remove(&name(member));
            assert_eq!(removed, known.is_some());
            if let Some((holder, mode)) = known
                && (group || mode == Mode::Stream)
            {
                for partition in 0..PARTITIONS as usize {
                    model.release(partition, holder);
                }
            }
            if removed && group {
                state.rebalance(PARTITIONS);
                model.generation += 1;
                model_rebalance(model, &before, &state.assignment);
            }
        }
        Op::Claim { member, max, new } => {
            let Some(&(holder, _)) = model.members.get(&name(member)) else {
                return;
            };
            let eligible = state.eligible(group, &name(member), PARTITIONS);
            let deadline = *now + Duration::from_millis(LEASE_MS);
            let (claims, plans) = plan(&mut state.cursors, &eligible, holder, max, *now, deadline);
            let mut expected = Vec::new();
            for &partition in &eligible {
                model.expire(partition as usize, *now);
                let room = max - expected.len();
                if room == 0 {
                    break;
                }
                expected.extend(model.claim(partition as usize, room, holder, deadline));
            }
            assert_eq!(claims, expected, "redeliveries claimed");
            if claims.len() == max {
                assert!(plans.is_empty(), "a full claim plans nothing new");
                return;
            }
            assert_eq!(
                plans.iter().map(|p| p.partition).collect::<Vec<_>>(),
                eligible
            );
            let mut left = (max - claims.len()) as u64;
            for planned in plans {
                let partition = planned.partition as usize;
                assert_eq!(planned.from, model.records[partition].len() as u64);
                let cursor = &mut state.cursors[partition];
                for offset in planned.from..planned.from + new.min(left) {
                    assert!(cursor.deliver_new(offset, holder, deadline));
                    model.records[partition].push(Record::Leased { holder, deadline });
                    model.deliveries[partition].push(1);
                    left -= 1;
                }
            }
        }
        Op::Ack { partition, offset } => {
            let ids = vec![(partition, offset)];
            let applied = apply(subscription, state, Command::Ack { ids, strict: false })
                .expect("a lenient ack is never refused");
            let record = model.records[partition as usize].get_mut(offset as usize);
            let newly =
                record.is_some_and(|r| std::mem::replace(r, Record::Acked) != Record::Acked);
            assert_eq!(applied.acked, usize::from(newly));
        }
        Op::Nack {
            member,
            partition,
            offset,
        } => {
            let holder = model.members.get(&name(member)).map(|&(h, _)| h);
            let ids = vec![(partition, offset)];
            let applied = apply(subscription, state, Command::Nack { holder, ids });
            let record = model.records[partition as usize].get_mut(offset as usize);
            match record {
                Some(record @ Record::Leased { .. }) if matches!(*record, Record::Leased { holder: h, .. } if Some(h) == holder) =>
                {
                    applied.expect("a nack of one's own lease is taken");
                    *record = Record::Waiting;
                }
                _ => assert!(matches!(applied, Err(Error::NotHeld { .. }))),
            }
        }
        Op::Wait { steps } => *now += Duration::from_millis(10 * steps),
        Op::ExpireAll => {
            state.expire_all(*now);
            for partition in 0..PARTITIONS as usize {
                model.expire(partition, *now);
            }
        }
    }
}

/// A rebalance gives back the leases of every partition whose owner changed.
fn model_rebalance(model: &mut Model, before: &Assignment, after: &Assignment) {
    for partition in 0..PARTITIONS {
        let (was, is) = (owner_of(before, partition), owner_of(after, partition));
        if was != is
            && let Some(&(holder, _)) = was.and_then(|id| model.members.get(id))
        {
            model.release(partition as usize, holder);
        }
    }
}

/// The real state says what the model says, record by record; in a group, each
/// partition has one owner and only that owner holds leases on it.
fn check(subscription: &Subscription, state: &State, model: &Model) {
    for (partition, records) in model.records.iter().enumerate() {
        let cursor = &state.cursors[partition];
        let committed = records
            .iter()
            .position(|r| *r != Record::Acked)
            .unwrap_or(records.len());
        assert_eq!(
            cursor.committed(),
            committed as u64,
            "committed offset of {partition}"
        );
        assert_eq!(cursor.next(), records.len() as u64);
        let outstanding = records.iter().filter(|r| **r != Record::Acked).count();
        assert_eq!(cursor.outstanding(), outstanding as u64);
        for (offset, record) in records.iter().enumerate() {
            let holder = match record {
                Record::Leased { holder, .. } => Some(*holder),
                _ => None,
            };
            assert_eq!(
                cursor.holder_of(offset as u64),
                holder,
                "lease of {partition}/{offset}"
            );
            if *record != Record::Acked {
                assert_eq!(
                    cursor.deliveries(offset as u64),
                    model.deliveries[partition][offset]
                );
            }
        }
    }
    let ids: Vec<&String> = state.members.keys().collect();
    assert_eq!(ids, model.members.keys().collect::<Vec<_>>());
    if !subscription.options.group {
        return;
    }
    assert_eq!(
        state.generation, model.generation,
        "one generation per membership change"
    );
    let assigned: Vec<&String> = state.assignment.keys().collect();
    assert_eq!(
        assigned, ids,
        "every member, and only members, have an assignment"
    );
    for partition in 0..PARTITIONS {
        let owners = state
            .assignment
            .values()
            .filter(|owned| owned.contains(&partition))
            .count();
        assert_eq!(
            owners,
            usize::from(!ids.is_empty()),
            "owners of partition {partition}"
        );
        let owner = owner_of(&state.assignment, partition).and_then(|id| state.members.get(id));
        for holder in state.cursors[partition as usize].holders() {
            assert_eq!(
                Some(holder),
                owner.map(|m| m.holder),
                "only the owner of {partition} holds its leases"
            );
        }
    }
}

fn run(group: bool, ops: &[Op]) {
    let mut record = SubscriptionRecord::for_test(PARTITIONS, 1);
    record.options.group = group;
    let cursors = (0..PARTITIONS).map(|_| Cursor::at(0)).collect();
    let subscription = Subscription::new(&record, cursors);
    let mut state = subscription.lock_any();
    let mut model = Model::new();
    let (mut now, mut holders) = (Instant::now(), 0);
    for op in ops {
        step(
            &subscription,
            &mut state,
            &mut model,
            op,
            &mut now,
            &mut holders,
        );
        check(&subscription, &state, &model);
    }
}

#[test]
fn a_group_member_that_leaves_gives_its_partitions_and_leases_to_the_others() {
    let ops = [
        Op::Join {
            member: 0,
            stream: true,
        },
        Op::Claim {
            member: 0,
            max: 6,
            new: 2,
        },
        Op::Join {
            member: 1,
            stream: true,
        },
        Op::Claim {
            member: 1,
            max: 6,
            new: 2,
        },
        Op::Ack {
            partition: 0,
            offset: 1,
        },
        Op::Leave { member: 0 },
        Op::Claim {
            member: 1,
            max: 9,
            new: 0,
        },
    ];
    run(true, &ops);
}

#[test]
fn a_shared_pull_reader_keeps_its_leases_until_the_deadline_after_it_goes() {
    let ops = [
        Op::Join {
            member: 0,
            stream: false,
        },
        Op::Claim {
            member: 0,
            max: 3,
            new: 1,
        },
        Op::Leave { member: 0 },
        Op::Join {
            member: 1,
            stream: true,
        },
        Op::Claim {
            member: 1,
            max: 3,
            new: 0,
        },
        Op::Wait { steps: 11 },
        Op::Claim {
            member: 1,
            max: 3,
            new: 0,
        },
    ];
    run(false, &ops);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any sequence of joins, leaves, claims, acks, nacks and expiries leaves a
    /// group's state exactly as the model says, with each partition read by its
    /// owner alone.
    #[test]
    fn a_group_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(true, &ops);
    }

    /// Likewise for a shared subscription, where every member reads every partition.
    #[test]
    fn a_shared_subscription_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(false, &ops);
    }
}
