//! Hosts and groups and their relations, with the rules of Ansible's `InventoryData`,
//! `Group` and `Host`: group depth, priorities, `all` and `ungrouped`, descendant order.

use indexmap::IndexMap;
use serde_json::{Map, Value};

/// Variables as Ansible holds them: an ordered mapping of names to JSON-like values.
pub type Vars = Map<String, Value>;

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    /// Hosts listed directly in this group, in the order they were added.
    pub hosts: Vec<String>,
    pub children: Vec<String>,
    pub parents: Vec<String>,
    pub vars: Vars,
    /// Longest distance from `all`, kept up to date as edges are added (like group.py).
    pub depth: usize,
    /// `ansible_group_priority` (default 1).
    pub priority: i64,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub vars: Vars,
    /// Groups listing this host directly.
    pub groups: Vec<String>,
}

/// What can go wrong while building the graph; the reader adds file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("{0} is not a known host nor group")]
    UnknownChild(String),
    #[error("group '{0}' cannot be its own child")]
    SelfChild(String),
    #[error("adding group '{child}' as child to '{parent}' creates a recursive dependency loop")]
    Loop { parent: String, child: String },
    #[error("ansible_group_priority of group '{group}' must be an integer, got {value}")]
    Priority { group: String, value: String },
    #[error("empty host or group name")]
    EmptyName,
}

#[derive(Debug, Clone)]
pub struct InventoryData {
    pub groups: IndexMap<String, Group>,
    pub hosts: IndexMap<String, Host>,
}

impl Default for InventoryData {
    fn default() -> Self {
        let mut data = InventoryData {
            groups: IndexMap::new(),
            hosts: IndexMap::new(),
        };
        data.add_group("all").expect("non-empty name");
        data.add_group("ungrouped").expect("non-empty name");
        data.add_child("all", "ungrouped")
            .expect("both groups exist");
        data
    }
}

impl InventoryData {
    pub fn add_group(&mut self, name: &str) -> Result<(), GraphError> {
        if name.is_empty() {
            return Err(GraphError::EmptyName);
        }
        self.groups
            .entry(name.to_string())
            .or_insert_with(|| Group {
                name: name.to_string(),
                hosts: Vec::new(),
                children: Vec::new(),
                parents: Vec::new(),
                vars: Vars::new(),
                depth: 0,
                priority: 1,
            });
        Ok(())
    }

    /// Adds the host (first definition wins its position) and puts it in `group`.
    pub fn add_host(
        &mut self,
        name: &str,
        group: &str,
        port: Option<u16>,
    ) -> Result<(), GraphError> {
        if name.is_empty() {
            return Err(GraphError::EmptyName);
        }
        if !self.hosts.contains_key(name) {
            let mut vars = Vars::new();
            if let Some(port) = port {
                vars.insert("ansible_port".into(), Value::from(port));
            }
            self.hosts.insert(
                name.to_string(),
                Host {
                    vars,
                    groups: Vec::new(),
                },
            );
        }
        let entry = self
            .groups
            .get_mut(group)
            .ok_or_else(|| GraphError::UnknownChild(group.to_string()))?;
        let host = &mut self.hosts[name];
        if !host.groups.iter().any(|g| g == group) {
            host.groups.push(group.to_string());
            entry.hosts.push(name.to_string());
        }
        Ok(())
    }

    pub fn set_group_var(
        &mut self,
        group: &str,
        key: &str,
        value: Value,
    ) -> Result<(), GraphError> {
        let entry = self
            .groups
            .get_mut(group)
            .ok_or_else(|| GraphError::UnknownChild(group.to_string()))?;
        if key == "ansible_group_priority" {
            if let Some(priority) = python_int(&value).map_err(|()| GraphError::Priority {
                group: group.to_string(),
                value: value.to_string(),
            })? {
                entry.priority = priority;
            }
        } else {
            entry.vars.insert(key.to_string(), value);
        }
        Ok(())
    }

    /// Like `InventoryData.set_variable`: when a group has the host's name, the group gets it.
    pub fn set_host_var(&mut self, host: &str, key: &str, value: Value) -> Result<(), GraphError> {
        if self.groups.contains_key(host) {
            return self.set_group_var(host, key, value);
        }
        if let Some(entry) = self.hosts.get_mut(host) {
            entry.vars.insert(key.to_string(), value);
        }
        Ok(())
    }

    /// `add_child`: `child` may name a group (an edge) or a host (membership).
    pub fn add_child(&mut self, parent: &str, child: &str) -> Result<(), GraphError> {
        if !self.groups.contains_key(parent) {
            return Err(GraphError::UnknownChild(parent.to_string()));
        }
        if !self.groups.contains_key(child) {
            if self.hosts.contains_key(child) {
                return self.add_host(child, parent, None);
            }
            return Err(GraphError::UnknownChild(child.to_string()));
        }
        if parent == child {
            return Err(GraphError::SelfChild(parent.to_string()));
        }
        if self.groups[parent].children.iter().any(|c| c == child) {
            return Ok(());
        }
        if self.ancestors(parent).contains(&child.to_string()) {
            return Err(GraphError::Loop {
                parent: parent.to_string(),
                child: child.to_string(),
            });
        }
        let parent_depth = self.groups[parent].depth;
        self.groups[parent].children.push(child.to_string());
        let child_group = &mut self.groups[child];
        if !child_group.parents.iter().any(|p| p == parent) {
            child_group.parents.push(parent.to_string());
        }
        child_group.depth = child_group.depth.max(parent_depth + 1);
        self.deepen_descendants(child);
        Ok(())
    }

    fn deepen_descendants(&mut self, start: &str) {
        let mut stack = vec![start.to_string()];
        while let Some(name) = stack.pop() {
            let depth = self.groups[&name].depth;
            for child in self.groups[&name].children.clone() {
                let child_group = &mut self.groups[&child];
                if child_group.depth < depth + 1 {
                    child_group.depth = depth + 1;
                    stack.push(child);
                }
            }
        }
    }

    /// Every group above `group` (not itself).
    pub fn ancestors(&self, group: &str) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        let mut todo: Vec<&str> = self
            .groups
            .get(group)
            .map(|g| g.parents.iter().map(String::as_str).collect())
            .unwrap_or_default();
        while let Some(name) = todo.pop() {
            if seen.iter().any(|s| s == name) {
                continue;
            }
            seen.push(name.to_string());
            todo.extend(self.groups[name].parents.iter().map(String::as_str));
        }
        seen
    }

    /// The groups a host belongs to, directly or through descendants (like `Host.get_groups`).
    pub fn host_groups(&self, host: &str) -> Vec<String> {
        let mut groups: Vec<String> = Vec::new();
        let direct = self
            .hosts
            .get(host)
            .map(|h| h.groups.as_slice())
            .unwrap_or_default();
        for group in direct {
            for name in self.ancestors(group).into_iter().chain([group.clone()]) {
                if !groups.contains(&name) {
                    groups.push(name);
                }
            }
        }
        groups
    }

    /// The hosts of a group and its descendants, in Ansible's order: the group itself, its
    /// children, then each further generation (Ansible walks a set there; we walk in order).
    pub fn group_hosts(&self, group: &str) -> Vec<String> {
        let Some(start) = self.groups.get(group) else {
            return Vec::new();
        };
        let mut ordered = vec![start.name.clone()];
        ordered.extend(start.children.iter().cloned());
        let mut seen: Vec<String> = ordered.clone();
        let mut level: Vec<String> = ordered.clone();
        while !level.is_empty() {
            let mut next = Vec::new();
            for name in &level {
                for child in &self.groups[name].children {
                    if !seen.contains(child) && !next.contains(child) {
                        ordered.push(child.clone());
                        next.push(child.clone());
                    }
                }
            }
            seen.extend(next.iter().cloned());
            level = next;
        }
        let mut hosts: Vec<String> = Vec::new();
        let mut seen_hosts = std::collections::HashSet::new();
        for name in &ordered {
            for host in &self.groups[name].hosts {
                if seen_hosts.insert(host.as_str()) {
                    hosts.push(host.clone());
                }
            }
        }
        hosts
    }

    /// `reconcile_inventory`: every root group under `all`, hosts without a group in `ungrouped`.
    pub fn reconcile(&mut self) -> Result<(), GraphError> {
        let names: Vec<String> = self.groups.keys().cloned().collect();
        for name in names {
            if name != "all" && self.groups[&name].parents.is_empty() {
                self.add_child("all", &name)?;
            }
        }
        let hosts: Vec<String> = self.hosts.keys().cloned().collect();
        for host in hosts {
            let groups = self.host_groups(&host);
            let others = groups.iter().any(|g| g != "all" && g != "ungrouped");
            if groups.iter().any(|g| g == "ungrouped") {
                if others {
                    self.groups["ungrouped"].hosts.retain(|h| h != &host);
                    self.hosts[&host].groups.retain(|g| g != "ungrouped");
                }
            } else if !others {
                self.add_host(&host, "ungrouped", None)?;
            }
        }
        Ok(())
    }

    /// A host's groups other than `all`, ordered like `sort_groups`: depth, priority, name.
    pub fn sorted_host_groups(&self, host: &str) -> Vec<&Group> {
        let mut groups: Vec<&Group> = self
            .host_groups(host)
            .iter()
            .filter(|g| *g != "all")
            .map(|g| &self.groups[g])
            .collect();
        groups.sort_by(|a, b| (a.depth, a.priority, &a.name).cmp(&(b.depth, b.priority, &b.name)));
        groups
    }
}

/// Python's `int(value)` as `Group.set_priority` applies it: `Ok(None)` where Python raises
/// TypeError (ignored there), `Err` where it raises ValueError.
fn python_int(value: &Value) -> Result<Option<i64>, ()> {
    match value {
        Value::Null | Value::Array(_) | Value::Object(_) => Ok(None),
        Value::Bool(b) => Ok(Some(i64::from(*b))),
        Value::Number(n) => Ok(n.as_i64().or_else(|| n.as_f64().map(|f| f.trunc() as i64))),
        Value::String(s) => s.trim().replace('_', "").parse().map(Some).map_err(|_| ()),
    }
}
