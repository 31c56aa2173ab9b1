package sdk

import (
	pb "github.com/bot-bottle/bot-bottle/sdk/internal/pluginpb"
)

func capsToStrings(cs []Capability) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = string(c)
	}
	return out
}

func capsFromStrings(ss []string) []Capability {
	out := make([]Capability, len(ss))
	for i, s := range ss {
		out[i] = Capability(s)
	}
	return out
}

func agentToPB(a Agent) *pb.Agent {
	return &pb.Agent{
		Name: a.Name, Description: a.Description, Dockerfile: a.Dockerfile,
		ContextDir: a.ContextDir, Image: a.Image, Command: a.Command,
		ResumeCommand: a.ResumeCommand, Workdir: a.Workdir, EnvNames: a.EnvNames,
		TranscriptPath: a.TranscriptPath, Egress: a.Egress, CapAdd: a.CapAdd, User: a.User,
	}
}

func agentFromPB(a *pb.Agent) Agent {
	if a == nil {
		return Agent{}
	}
	return Agent{
		Name: a.Name, Description: a.Description, Dockerfile: a.Dockerfile,
		ContextDir: a.ContextDir, Image: a.Image, Command: a.Command,
		ResumeCommand: a.ResumeCommand, Workdir: a.Workdir, EnvNames: a.EnvNames,
		TranscriptPath: a.TranscriptPath, Egress: a.Egress, CapAdd: a.CapAdd, User: a.User,
	}
}

func specToPB(s Spec) *pb.Spec {
	return &pb.Spec{
		Identity: s.Identity, Agent: agentToPB(s.Agent), Cwd: s.Cwd, CopyCwd: s.CopyCwd,
		BottleDockerfile: s.BottleDockerfile, CommittedImage: s.CommittedImage,
		TranscriptDir: s.TranscriptDir, QueueDir: s.QueueDir, Env: s.Env, Egress: s.Egress,
		ConfigJson: s.Config, Command: s.Command, Tty: s.TTY, Resume: s.Resume,
		HelperBinary: s.HelperBinary, SnapshotDir: s.SnapshotDir, Detach: s.Detach, EgressLog: s.EgressLog,
	}
}

func specFromPB(s *pb.Spec) Spec {
	if s == nil {
		return Spec{}
	}
	return Spec{
		Identity: s.Identity, Agent: agentFromPB(s.Agent), Cwd: s.Cwd, CopyCwd: s.CopyCwd,
		BottleDockerfile: s.BottleDockerfile, CommittedImage: s.CommittedImage,
		TranscriptDir: s.TranscriptDir, QueueDir: s.QueueDir, Env: s.Env, Egress: s.Egress,
		Config: s.ConfigJson, Command: s.Command, TTY: s.Tty, Resume: s.Resume,
		HelperBinary: s.HelperBinary, SnapshotDir: s.SnapshotDir, Detach: s.Detach, EgressLog: s.EgressLog,
	}
}

func handleToPB(h Handle) *pb.Handle {
	return &pb.Handle{Version: h.Version, Backend: h.Backend, Identity: h.Identity, Data: h.Data}
}

func handleFromPB(h *pb.Handle) Handle {
	if h == nil {
		return Handle{}
	}
	return Handle{Version: h.Version, Backend: h.Backend, Identity: h.Identity, Data: h.Data}
}

func sizeToPB(t TermSize) *pb.TermSize {
	return &pb.TermSize{Rows: uint32(t.Rows), Cols: uint32(t.Cols)}
}

func sizeFromPB(t *pb.TermSize) TermSize {
	if t == nil {
		return TermSize{}
	}
	return TermSize{Rows: uint16(t.Rows), Cols: uint16(t.Cols)}
}

func bottleToPB(b Bottle) *pb.Bottle {
	out := &pb.Bottle{Identity: b.Identity, Agent: b.Agent, Status: b.Status,
		StartedAt: b.StartedAt, Resources: b.Resources, Image: b.Image}
	if b.Handle != nil {
		out.Handle = handleToPB(*b.Handle)
	}
	return out
}

func bottleFromPB(b *pb.Bottle) Bottle {
	out := Bottle{Identity: b.Identity, Agent: b.Agent, Status: b.Status,
		StartedAt: b.StartedAt, Resources: b.Resources, Image: b.Image}
	if b.Handle != nil {
		h := handleFromPB(b.Handle)
		out.Handle = &h
	}
	return out
}
