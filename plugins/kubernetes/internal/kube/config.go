package kube

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Config is the plugin's `config {}` block in plugins.hcl.
type Config struct {
	// Kubeconfig and Context pick the cluster the standard client-go way:
	// Kubeconfig, else $KUBECONFIG, else ~/.kube/config, else the pod's
	// in-cluster credentials; Context, else the kubeconfig's current one.
	Kubeconfig string `json:"kubeconfig"`
	Context    string `json:"context"`
	// Namespace the bottles' objects go in; else the context's, else
	// "default".
	Namespace string `json:"namespace"`
	// NodeName pins bottles to one node, for a cluster without a scheduler.
	NodeName string `json:"node_name"`
	// Docker is the local engine's CLI, which builds agent images.
	Docker string `json:"docker"`
	// ImageRepo is the repository prefix of the images this plugin builds.
	ImageRepo string `json:"image_repo"`
	// ImageLoad is the command that makes a locally built image available
	// to a local cluster (the reference is appended as its last argument),
	// e.g. ["sh", "-c", "docker save \"$1\" | ctr -n k8s.io images import -", "load"].
	ImageLoad []string `json:"image_load"`
	// ImagePresent, when set, is asked first (reference appended; exit 0
	// means the cluster has it), so that ImageLoad runs once per image.
	ImagePresent []string `json:"image_present"`
	// InitImage is a pullable reference of the kube-init image; without it
	// the plugin builds one from bot-bottle-kube-init and loads it.
	InitImage string `json:"init_image"`
	// Resources are the agent container's requests and limits
	// ({requests = {cpu = "500m", memory = "1Gi"}, limits = {...}}).
	Resources map[string]map[string]string `json:"resources"`
	// RuntimeClass (e.g. gVisor's or Kata's, where the cluster has them).
	RuntimeClass string            `json:"runtime_class"`
	NodeSelector map[string]string `json:"node_selector"`
	Tolerations  []Toleration      `json:"tolerations"`
	// StorageClass and VolumeSize of the project's volume claim.
	StorageClass string `json:"storage_class"`
	VolumeSize   string `json:"volume_size"`

	resources corev1.ResourceRequirements
	volume    resource.Quantity
}

// Toleration is one of the pod's tolerations.
type Toleration struct {
	Key               string `json:"key"`
	Operator          string `json:"operator"`
	Value             string `json:"value"`
	Effect            string `json:"effect"`
	TolerationSeconds *int64 `json:"toleration_seconds"`
}

var repoRE = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$`)

// ParseConfig reads and checks the config block (JSON from the core).
func ParseConfig(raw []byte) (*Config, error) {
	c := &Config{}
	if len(bytes.TrimSpace(raw)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(c); err != nil {
			return nil, fmt.Errorf("kubernetes plugin config: %v", err)
		}
	}
	if c.Docker == "" {
		c.Docker = "docker"
	}
	if c.ImageRepo == "" {
		c.ImageRepo = "bot-bottle-k8s.local"
	}
	if !repoRE.MatchString(c.ImageRepo) {
		return nil, fmt.Errorf("kubernetes plugin config: image_repo %q is not an image repository", c.ImageRepo)
	}
	if c.Namespace != "" {
		if errs := validation.IsDNS1123Label(c.Namespace); len(errs) > 0 {
			return nil, fmt.Errorf("kubernetes plugin config: namespace %q: %s", c.Namespace, errs[0])
		}
	}
	if c.VolumeSize == "" {
		c.VolumeSize = "1Gi"
	}
	q, err := resource.ParseQuantity(c.VolumeSize)
	if err != nil {
		return nil, fmt.Errorf("kubernetes plugin config: volume_size %q is not a quantity", c.VolumeSize)
	}
	c.volume = q
	for kind, m := range c.Resources {
		list := corev1.ResourceList{}
		for name, v := range m {
			q, err := resource.ParseQuantity(v)
			if err != nil {
				return nil, fmt.Errorf("kubernetes plugin config: resources %s %s %q is not a quantity", kind, name, v)
			}
			list[corev1.ResourceName(name)] = q
		}
		switch kind {
		case "requests":
			c.resources.Requests = list
		case "limits":
			c.resources.Limits = list
		default:
			return nil, fmt.Errorf("kubernetes plugin config: resources %q: want requests or limits", kind)
		}
	}
	for _, t := range c.Tolerations {
		switch t.Operator {
		case "", "Equal", "Exists":
		default:
			return nil, fmt.Errorf("kubernetes plugin config: toleration operator %q: want Equal or Exists", t.Operator)
		}
	}
	return c, nil
}

func (c *Config) tolerations() []corev1.Toleration {
	var out []corev1.Toleration
	for _, t := range c.Tolerations {
		out = append(out, corev1.Toleration{Key: t.Key, Operator: corev1.TolerationOperator(t.Operator), Value: t.Value,
			Effect: corev1.TaintEffect(t.Effect), TolerationSeconds: t.TolerationSeconds})
	}
	return out
}
