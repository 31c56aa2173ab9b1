description     = "Codex CLI (OpenAI)"
dockerfile      = "Dockerfile"
# The bottle is the sandbox; Codex's own (Landlock/seccomp) cannot run inside
# a container with every capability dropped.
command         = ["codex", "--dangerously-bypass-approvals-and-sandbox"]
resume_command  = ["codex", "resume", "--last", "--dangerously-bypass-approvals-and-sandbox"]
workdir         = "/workspace"
env             = ["OPENAI_API_KEY"]
transcript_path = "/home/agent/.codex/sessions"
egress          = ["api.openai.com:443"]
cap_add         = []
