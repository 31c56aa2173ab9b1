# Default bot-bottle configuration. Copy to $BOT_BOTTLE_HOME/plugins.hcl to
# change it; a user file replaces this one whole.
default_backend = "docker"

plugin "docker" {
  # path   = "/opt/bot-bottle/bot-bottle-plugin-docker"
  # sha256 = "…"
  config {
    memory     = "4g"
    pids_limit = 512
  }
}

plugin "smolmachines" {
  # config { smolvm = "/usr/local/bin/smolvm" }
}
