description     = "Claude Code (Anthropic)"
dockerfile      = "Dockerfile"
command         = ["claude", "--dangerously-skip-permissions"]
resume_command  = ["claude", "--dangerously-skip-permissions", "--continue"]
workdir         = "/workspace"
env             = []
transcript_path = "/home/agent/.claude/projects"
# What Claude Code needs for normal work (its network-config docs): the API,
# and for signing in inside the bottle claude.ai and the Console. Telemetry
# and error reporting are switched off in the image, so their hosts are not
# here.
egress          = ["api.anthropic.com:443", "claude.ai:443", "console.anthropic.com:443", "platform.claude.com:443"]
cap_add         = []

# An API key: the agent gets a placeholder; the egress proxy puts the key in
# x-api-key toward the API only.
credential "anthropic" {
  env      = "ANTHROPIC_API_KEY"
  from_env = "ANTHROPIC_API_KEY"
  hosts    = ["api.anthropic.com"]
  header   = "x-api-key"
}

# A subscription's long-lived token (`claude setup-token` on the host): sent
# by the CLI as Authorization: Bearer; it is not refreshed, so nobody
# rotates the operator's own sign-in.
credential "claude-oauth" {
  env      = "CLAUDE_CODE_OAUTH_TOKEN"
  from_env = "CLAUDE_CODE_OAUTH_TOKEN"
  hosts    = ["api.anthropic.com"]
  header   = "Authorization"
  prefix   = "Bearer "
}
