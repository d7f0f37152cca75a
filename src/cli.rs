//! Command-line definitions only: clap structs, no behaviour.
//!
//! Flag names are public interface (users put them in Makefiles and CI jobs): keep them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "dropship",
    version,
    about = "Get container images onto every node of a cluster fast, over plain SSH, through a bastion",
    long_about = "dropship reads an Ansible inventory (INI or YAML, group_vars/ and host_vars/, \
the Kubespray `bastion` group and jump settings), pulls each image once on a download \
delegate, keeps it in a local content-addressed cache, and pushes it to every node in \
parallel over SSH, loading it with `docker load` there.",
    after_help = "Examples:
  dropship inventory -i inventory/mycluster/hosts.ini --list
  dropship inventory -i inventory/mycluster/ --graph
  dropship ping -i inventory/mycluster/hosts.ini -l kube_node
  dropship push -i inventory/mycluster/hosts.ini --image registry.k8s.io/pause:3.9
  dropship push -i inventory/mycluster/hosts.ini --images-file images.txt --check
  dropship cache list"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,

    /// More output: -v for progress details, -vv for debugging, -vvv for SSH traces.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Inventory file or directory (repeatable, like ansible's -i).
    #[arg(short = 'i', long = "inventory", value_name = "PATH", global = true)]
    pub inventory: Vec<PathBuf>,

    /// Ansible host pattern limiting the hosts acted on, e.g. 'kube_node:!node3' or 'all[0:2]'.
    #[arg(short = 'l', long = "limit", value_name = "PATTERN", global = true)]
    pub limit: Option<String>,

    /// Extra variables, highest precedence as in Ansible: KEY=VALUE (strings), a YAML/JSON
    /// mapping, or @FILE (repeatable; later ones win).
    #[arg(
        short = 'e',
        long = "extra-vars",
        value_name = "KEY=VALUE|YAML|@FILE",
        global = true
    )]
    pub extra_vars: Vec<String>,

    /// Ansible Vault password file, or an executable printing the password (repeatable;
    /// ANSIBLE_VAULT_PASSWORD_FILE adds one, as with ansible).
    #[arg(
        long = "vault-password-file",
        visible_alias = "vault-pass-file",
        value_name = "FILE",
        global = true
    )]
    pub vault_password_files: Vec<PathBuf>,

    /// Ansible Vault identity: [LABEL@]FILE or [LABEL@]prompt (repeatable).
    #[arg(long = "vault-id", value_name = "[LABEL@]SOURCE", global = true)]
    pub vault_ids: Vec<String>,

    /// Ask for the Ansible Vault password on the terminal.
    #[arg(
        long = "ask-vault-pass",
        visible_alias = "ask-vault-password",
        global = true
    )]
    pub ask_vault_pass: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the inventory as Ansible reads it (same output as ansible-inventory).
    #[command(after_help = "Examples:
  dropship inventory -i hosts.ini --list
  dropship inventory -i hosts.yaml --graph kube_node
  dropship inventory -i inventory/mycluster/ --host node1")]
    Inventory(InventoryArgs),

    /// Connect to every host (through the bastion) and report its facts.
    #[command(after_help = "Examples:
  dropship ping -i hosts.ini
  dropship ping -i hosts.ini -l 'kube_node[0:3]' -f 20")]
    Ping(PingArgs),

    /// Pull images once on the delegate and push them to every node.
    #[command(after_help = "Examples:
  dropship push -i hosts.ini --image nginx:1.25 --image redis:7
  dropship push -i hosts.ini --images-file images.txt --json recap.json
  dropship push -i hosts.ini --image nginx:1.25 --check
  dropship push -i hosts.ini --offline --image nginx:1.25")]
    Push(Box<PushArgs>),

    /// Inspect and manage the local image cache.
    #[command(subcommand)]
    Cache(CacheCommand),

    /// Print a shell completion script.
    #[command(after_help = "Examples:
  dropship completions bash > /usr/share/bash-completion/completions/dropship
  dropship completions zsh > /usr/local/share/zsh/site-functions/_dropship
  dropship completions fish > ~/.config/fish/completions/dropship.fish")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Write the man pages (dropship.1 and one per subcommand) into DIR (`make man`).
    #[command(hide = true)]
    Man {
        #[arg(value_name = "DIR")]
        out_dir: PathBuf,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct InventoryArgs {
    /// Print every group and host with merged variables as JSON.
    #[arg(long)]
    pub list: bool,

    /// Print the group tree (from GROUP, default `all`).
    #[arg(long, value_name = "GROUP", num_args = 0..=1, default_missing_value = "all")]
    pub graph: Option<String>,

    /// Print the merged variables of one host as JSON.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
}

/// How to reach hosts over SSH. Inventory variables supply the defaults; these override them.
#[derive(Debug, Args, Clone, Default)]
pub struct ConnectArgs {
    /// Remote user (default: ansible_user, then ansible.cfg's remote_user, then
    /// ~/.ssh/config's User, else the current user).
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,

    /// Private key file (default: ansible_ssh_private_key_file, then ansible.cfg's
    /// private_key_file, then ~/.ssh/config's IdentityFile, then ssh-agent and ~/.ssh/id_*).
    #[arg(long, visible_alias = "key-file", value_name = "FILE")]
    pub private_key: Option<PathBuf>,

    /// ssh config file instead of ~/.ssh/config and /etc/ssh/ssh_config (/dev/null: none).
    #[arg(short = 'F', long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,

    /// Jump host, [user@]host[:port]; overrides the inventory's bastion.
    #[arg(long, value_name = "[USER@]HOST[:PORT]")]
    pub bastion: Option<String>,

    /// known_hosts file (default: the inventory's UserKnownHostsFile, else ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,

    /// Learn the keys of hosts not yet in known_hosts (like StrictHostKeyChecking=accept-new).
    #[arg(long)]
    pub accept_new: bool,

    /// Honour StrictHostKeyChecking=no from the inventory. Dangerous: allows man-in-the-middle.
    #[arg(long)]
    pub insecure_ignore_host_keys: bool,

    /// Seconds to wait for a TCP connect, SSH handshake, authentication or channel open
    /// (1-86400; default: ansible.cfg's timeout, else 10).
    #[arg(
        short = 'T',
        long,
        visible_alias = "timeout",
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub connect_timeout: Option<u64>,

    /// Parallel hosts at most, like Ansible's forks (1-1000; default: ansible.cfg's forks,
    /// else 10).
    #[arg(
        short = 'f',
        long,
        value_name = "N",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_FORKS)
    )]
    pub forks: Option<usize>,

    /// Print the hosts that would be contacted and exit, contacting nothing.
    #[arg(long)]
    pub list_hosts: bool,
}

/// The most parallel hosts `-f` and ansible.cfg's `forks` accept: each is an SSH session,
/// file descriptors and buffers, and the bastion starts only 8 handshakes at a time anyway.
pub const MAX_FORKS: u64 = 1000;

#[derive(Debug, Args)]
pub struct PingArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,

    /// Write the per-host results as JSON to FILE ("-" for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,

    /// Image to push (repeatable).
    #[arg(long = "image", value_name = "REF")]
    pub images: Vec<String>,

    /// File with one image reference per line (# starts a comment).
    #[arg(long, value_name = "FILE")]
    pub images_file: Option<PathBuf>,

    #[command(flatten)]
    pub cache: CacheDirArgs,

    /// Where images are pulled: `localhost` or an inventory host (default: Kubespray's rule).
    #[arg(long, value_name = "localhost|HOST")]
    pub delegate: Option<String>,

    /// Use only the local cache; never contact a registry or the delegate.
    #[arg(long)]
    pub offline: bool,

    /// With the localhost delegate, where images come from: `auto` (default) fetches from the
    /// registries in-process and takes from the Docker daemon next to dropship what no registry
    /// has (a `localhost/...` name, a local build); `registry` only the registries; `docker`
    /// only the daemon.
    #[arg(long, value_enum, value_name = "SOURCE")]
    pub source: Option<SourceArg>,

    /// A registry (HOST[:PORT]) spoken to over plain HTTP (repeatable; also
    /// docker_insecure_registries, containerd_insecure_registries, http:// mirrors).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,

    /// A PEM file of CAs to trust for registries, besides the system's (repeatable; also
    /// dropship_registry_ca_files).
    #[arg(long = "registry-ca", value_name = "FILE")]
    pub registry_cas: Vec<PathBuf>,

    /// One platform for every node, e.g. linux/arm64 (default: each node's own, from its
    /// `uname -m`, dropship_platform or image_arch).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,

    /// zstd level for the cache, 1-19 (default: from download_compress). Levels 20-22 need
    /// zstd's --ultra windows, tens of MiB per compression thread: not offered.
    #[arg(
        long,
        value_name = "1-19",
        value_parser = clap::value_parser!(i32).range(1..=19)
    )]
    pub zstd_level: Option<i32>,

    /// Gather facts and print what would be sent or skipped per host; change nothing.
    #[arg(short = 'C', long)]
    pub check: bool,

    /// Attempts per node, at least 1 (default: download_retries, else 4).
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub retries: Option<u32>,

    /// Random extra delay bound between attempts, 0-3600 seconds (default: retry_stagger,
    /// else 5).
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(0..=3600)
    )]
    pub retry_stagger: Option<u64>,

    /// Seed for the retry jitter (reproducible runs).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Keep the archive on each node in local_release_dir/images/ (download_keep_remote_cache).
    #[arg(long)]
    pub keep_remote_cache: bool,

    /// Always send whole images, never only the layers a node lacks.
    #[arg(long)]
    pub no_delta: bool,

    /// Write the per-host recap as JSON to FILE ("-" for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Where the localhost delegate gets images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceArg {
    /// The registries, and the Docker daemon for what they do not have.
    Auto,
    /// The registries, in-process: no Docker daemon needed.
    Registry,
    /// The Docker daemon next to dropship (`DOCKER_HOST`).
    Docker,
}

#[derive(Debug, Args, Clone, Default)]
pub struct CacheDirArgs {
    /// Local image cache (default: download_cache_dir, else the user's cache dir).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List cached images with their sizes.
    List {
        #[command(flatten)]
        cache: CacheDirArgs,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Import docker-archive files (plain tar, gzip or zstd), e.g. Kubespray's cache files.
    Import {
        #[command(flatten)]
        cache: CacheDirArgs,
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Write a `docker load` archive of cached images.
    Export {
        #[command(flatten)]
        cache: CacheDirArgs,
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
        /// Output file ("-" for stdout).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Compress the output with zstd.
        #[arg(long)]
        zstd: bool,
    },
    /// Check the sha256 of every cached object.
    Verify {
        #[command(flatten)]
        cache: CacheDirArgs,
    },
    /// Remove layers no image refers to (or everything with --all).
    Prune {
        #[command(flatten)]
        cache: CacheDirArgs,
        /// Remove every image and layer (asks first on a terminal; needs --yes otherwise).
        #[arg(long)]
        all: bool,
        /// Do not ask before --all.
        #[arg(short = 'f', long, visible_alias = "force")]
        yes: bool,
    },
}
