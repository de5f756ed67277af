//! `MetaStore` in memory, for tests and embedders that need no persistence.

use std::collections::{BTreeMap, BTreeSet};

use parking_lot::Mutex;

use super::{MetaError, MetaStore, TopicRecord};
use crate::acl::AclBinding;
use crate::quota::{QuotaLimits, QuotaTarget};

#[derive(Debug, Default)]
pub struct MemoryMetaStore {
    /// Topics by name.
    topics: Mutex<BTreeMap<String, TopicRecord>>,
    /// Producer ids handed out and not forgotten, with their epochs.
    producers: Mutex<BTreeMap<i64, i16>>,
    /// The last producer id handed out: ids are never reused, even
    /// forgotten ones.
    last_producer_id: Mutex<i64>,
    /// Committed offsets by (group, topic, partition).
    offsets: Mutex<BTreeMap<(String, String, u32), i64>>,
    /// When each group was last active.
    activity: Mutex<BTreeMap<String, i64>>,
    /// Deleted topics whose files may remain.
    deleted: Mutex<BTreeSet<String>>,
    /// The principal each producer id was handed out to.
    producer_owners: Mutex<BTreeMap<i64, String>>,
    acls: Mutex<BTreeSet<AclBinding>>,
    /// Client quotas by target.
    quotas: Mutex<BTreeMap<QuotaTarget, QuotaLimits>>,
}

impl MetaStore for MemoryMetaStore {
    fn put_topic(&self, topic: &TopicRecord) -> Result<(), MetaError> {
        self.topics.lock().insert(topic.name.clone(), topic.clone());
        self.deleted.lock().remove(&topic.name);
        Ok(())
    }

    fn delete_topic(&self, name: &str) -> Result<(), MetaError> {
        self.topics.lock().remove(name);
        self.deleted.lock().insert(name.to_owned());
        Ok(())
    }

    fn deleted_topics(&self) -> Result<Vec<String>, MetaError> {
        Ok(self.deleted.lock().iter().cloned().collect())
    }

    fn forget_deleted_topic(&self, name: &str) -> Result<(), MetaError> {
        self.deleted.lock().remove(name);
        Ok(())
    }

    fn topics(&self) -> Result<Vec<TopicRecord>, MetaError> {
        Ok(self.topics.lock().values().cloned().collect())
    }

    fn allocate_producer_id(&self) -> Result<i64, MetaError> {
        let mut last = self.last_producer_id.lock();
        *last += 1;
        self.producers.lock().insert(*last, 0);
        Ok(*last)
    }

    fn put_producer_epoch(&self, producer_id: i64, epoch: i16) -> Result<(), MetaError> {
        self.producers.lock().insert(producer_id, epoch);
        Ok(())
    }

    fn producer_epochs(&self) -> Result<Vec<(i64, i16)>, MetaError> {
        Ok(self
            .producers
            .lock()
            .iter()
            .map(|(id, e)| (*id, *e))
            .collect())
    }

    fn forget_producer(&self, producer_id: i64) -> Result<(), MetaError> {
        self.producers.lock().remove(&producer_id);
        self.producer_owners.lock().remove(&producer_id);
        Ok(())
    }

    fn sync(&self) -> Result<(), MetaError> {
        Ok(())
    }

    fn stage_offsets(&self, group: &str, offsets: &[(String, u32, i64)]) -> Result<(), MetaError> {
        let mut stored = self.offsets.lock();
        for (topic, partition, offset) in offsets {
            stored.insert((group.to_owned(), topic.clone(), *partition), *offset);
        }
        Ok(())
    }

    fn offsets(&self, group: &str) -> Result<Vec<(String, u32, i64)>, MetaError> {
        Ok(self
            .offsets
            .lock()
            .iter()
            .filter(|((g, _, _), _)| g == group)
            .map(|((_, topic, partition), offset)| (topic.clone(), *partition, *offset))
            .collect())
    }

    fn delete_group(&self, group: &str) -> Result<(), MetaError> {
        self.offsets.lock().retain(|(g, _, _), _| g != group);
        self.activity.lock().remove(group);
        Ok(())
    }

    fn stage_group_activity(&self, group: &str, at_ms: i64) -> Result<(), MetaError> {
        self.activity.lock().insert(group.to_owned(), at_ms);
        Ok(())
    }

    fn group_activity(&self) -> Result<Vec<(String, i64)>, MetaError> {
        Ok(self
            .activity
            .lock()
            .iter()
            .map(|(g, at)| (g.clone(), *at))
            .collect())
    }

    fn groups(&self) -> Result<Vec<String>, MetaError> {
        let mut groups: Vec<String> = self
            .offsets
            .lock()
            .keys()
            .map(|(g, _, _)| g.clone())
            .collect();
        groups.dedup();
        Ok(groups)
    }

    fn put_producer_owner(&self, producer_id: i64, owner: &str) -> Result<(), MetaError> {
        self.producer_owners
            .lock()
            .insert(producer_id, owner.to_owned());
        Ok(())
    }

    fn producer_owners(&self) -> Result<Vec<(i64, String)>, MetaError> {
        Ok(self
            .producer_owners
            .lock()
            .iter()
            .map(|(id, owner)| (*id, owner.clone()))
            .collect())
    }

    fn put_acl(&self, acl: &AclBinding) -> Result<(), MetaError> {
        self.acls.lock().insert(acl.clone());
        Ok(())
    }

    fn delete_acl(&self, acl: &AclBinding) -> Result<bool, MetaError> {
        Ok(self.acls.lock().remove(acl))
    }

    fn acls(&self) -> Result<Vec<AclBinding>, MetaError> {
        Ok(self.acls.lock().iter().cloned().collect())
    }
    fn put_quota(&self, target: &QuotaTarget, limits: &QuotaLimits) -> Result<(), MetaError> {
        self.quotas.lock().insert(target.clone(), *limits);
        Ok(())
    }

    fn delete_quota(&self, target: &QuotaTarget) -> Result<(), MetaError> {
        self.quotas.lock().remove(target);
        Ok(())
    }

    fn quotas(&self) -> Result<Vec<(QuotaTarget, QuotaLimits)>, MetaError> {
        Ok(self
            .quotas
            .lock()
            .iter()
            .map(|(target, limits)| (target.clone(), *limits))
            .collect())
    }
}
