# Default bot-bottle configuration. Copy to $BOT_BOTTLE_HOME/plugins.hcl to
# change it; a user file replaces this one whole.
default_backend = "docker"

plugin "docker" {
  # path   = "/opt/bot-bottle/bot-bottle-plugin-docker"
  # sha256 = "…"
  config {
    memory     = "4g"
    pids_limit = 512
    # A bottle with an egress allowlist gets an internal network of its own
    # (a /29 of subnet_pool, made ahead) whose only way out is the home's
    # shared egress proxy, on an outbound network of the home; the proxy
    # also joins egress_networks (existing Docker networks whose services
    # bottles may then reach by name, through the allowlist).
    # subnet_pool     = "198.18.0.0/15"
    # egress_networks = ["my-services"]
    # The home's proxy stays running after its last bottle stops, so that
    # the next egress start finds it (about half the time of a start that
    # makes it); idle, it holds about 15 MiB of memory and no CPU.
    # `bot-bottle list` shows it idle and `bot-bottle prune` removes it, as
    # does the first start of an upgraded plugin, which makes its own.
    # false has the last stop remove it.
    # keep_egress_proxy = true
    # The OCI runtime of the agent's container, if not the engine's default;
    # it must be registered with the engine (see `docker info`).
    # runtime = "runsc"
    # Capabilities that break the container boundary (SYS_ADMIN,
    # DAC_READ_SEARCH, …) are refused in cap_add unless allowed here; a
    # bottle that has one is marked WEAKENED in the preflight.
    # allow_dangerous_caps = ["SYS_PTRACE"]
  }
}

plugin "smolmachines" {
  # config { smolvm = "/usr/local/bin/smolvm" }
}

# Bottles as pods on a Kubernetes cluster (see README, "The Kubernetes
# backend"); a bottle with an egress allowlist is refused there for now.
# plugin "kubernetes" {
#   config {
#     context    = "my-cluster"
#     namespace  = "agents"
#     image_load = ["sh", "-c", "docker save \"$1\" | ctr -n k8s.io images import -", "load"]
#   }
# }
