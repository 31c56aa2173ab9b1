description     = "Codex CLI (OpenAI)"
dockerfile      = "Dockerfile"
# The bottle is the sandbox; Codex's own (Landlock/seccomp) cannot run inside
# a container with every capability dropped.
command         = ["codex", "--dangerously-bypass-approvals-and-sandbox"]
resume_command  = ["codex", "resume", "--last", "--dangerously-bypass-approvals-and-sandbox"]
workdir         = "/workspace"
env             = []
transcript_path = "/home/agent/.codex/sessions"
# What Codex needs for normal work (its auth docs): the API, and for signing
# in with ChatGPT inside the bottle (codex login --device-auth) the sign-in
# service and ChatGPT's backend that such a session talks to.
egress          = ["api.openai.com:443", "auth.openai.com:443", "chatgpt.com:443"]
cap_add         = []

# An API key: the agent gets a placeholder; the egress proxy puts the key in
# Authorization: Bearer toward the API only.
credential "openai" {
  env      = "OPENAI_API_KEY"
  from_env = "OPENAI_API_KEY"
  hosts    = ["api.openai.com"]
  header   = "Authorization"
  prefix   = "Bearer "
}
