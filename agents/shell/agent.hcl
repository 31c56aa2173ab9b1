description     = "A minimal Debian shell"
dockerfile      = "Dockerfile"
command         = ["bash", "-l"]
resume_command  = ["bash", "-l"]
workdir         = "/workspace"
env             = []
transcript_path = "/home/agent/.bottle-transcript"
egress          = []
