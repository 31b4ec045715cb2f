//! The robust process-shared mutex of each shard, the guard that is the only way to write a
//! shard's guarded bytes, and the optimistic reader (`optimistic.rs`) that reads them without
//! the mutex, under the shard's seqlock, which every guard keeps.
//!
//! Lock order: a process holds at most one shard lock at a time. Operations that touch every
//! shard (`all`, `length`, `clear`, `memory`, `check_integrity`, the coordinator's sweep and
//! `worker_exited`) lock shards one after another in ascending order, releasing each before
//! taking the next. The coordinator takes the fork gate (a process-local mutex) before any
//! shard lock, and waits at most 10 ms for each shard. No user code, serialization, logging
//! or syscall runs under a shard lock, and no allocation on the get/set path; the rare paths
//! that allocate under it are the repair, the merge of blocks (a walk), `all`'s copies,
//! `memory` and `check_integrity`.
//!
//! Crash model: the mutex is `PTHREAD_MUTEX_ROBUST`. When its holder dies, the kernel marks
//! it and the next locker gets `EOWNERDEAD` ([`Acquired::owner_died`]); the shard layer then
//! repairs the shard before `mark_consistent`. If that locker dies or panics too, the guard's
//! drop still marks the mutex consistent, and the shard's `dirty` word (set before repairing)
//! makes the next locker repair again, so the mutex never becomes `ENOTRECOVERABLE`.

pub(crate) mod fork_gate;
mod guard;
mod mutex;
mod optimistic;

pub(crate) use guard::ShardGuard;
pub(crate) use mutex::{init_shard_mutex, LockFailure};
pub(crate) use optimistic::{OptimisticRead, ShardView};
