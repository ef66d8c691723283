// Package gcpiit attests nodes running on Google Compute Engine by their
// instance identity token (SPIRE's "gcp_iit" attestation type): the agent
// sends the token the metadata server issues it for the audience
// "spire-gcp-node-attestor" in the full format (AgentPayload), and the
// server verifies Google's RS256 signature against Google's published keys,
// the issuer, audience and lifetime, checks the project against an
// allow-list, optionally reads the instance from the Compute API for its
// labels, metadata, service accounts and network tags, and returns the agent
// ID and SPIRE's selectors (Attestor). The payload is SPIRE's — the token
// itself — so either half can face a real SPIRE v1.13 peer.
//
// Any process on the instance can obtain such a token, so an attestation is
// trust on first use: the server accepts one per instance until that agent
// is evicted (nodeattest.Result.FirstUse).
package gcpiit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/api/compute/v1"

	"github.com/arborid/arbor/internal/nodeattest"
	"github.com/arborid/arbor/internal/nodeattest/boundedhttp"
	"github.com/arborid/arbor/internal/selector"
)

// Type is the attestation data type, and the type of the selectors produced.
const Type = "gcp_iit"

// Audience is the audience the agent asks the metadata server for and the
// server requires in the token, as SPIRE's gcp_iit plugins do.
const Audience = "spire-gcp-node-attestor"

// DefaultKeysURL serves Google's OAuth2 signing keys as a JSON Web Key Set.
// (SPIRE fetches the same keys as PEM certificates from
// https://www.googleapis.com/oauth2/v1/certs; Config.KeysURL takes either.)
const DefaultKeysURL = "https://www.googleapis.com/oauth2/v3/certs"

// Defaults for the zero values of Config.
const (
	// DefaultMaxMetadataValueSize is SPIRE's max_metadata_value_size default.
	DefaultMaxMetadataValueSize = 128
	// DefaultKeysRefreshInterval is the least time between two fetches of
	// the signing keys.
	DefaultKeysRefreshInterval = time.Minute
	// DefaultTimeout bounds the Google calls of one attestation.
	DefaultTimeout = 10 * time.Second
	// leeway is the clock skew allowed on exp, iat and nbf: go-jose's
	// default, which is what SPIRE's server allows.
	leeway = time.Minute
)

// Config configures an Attestor. The fields with SPIRE names mirror the
// server plugin_data of SPIRE's gcp_iit NodeAttestor. It must not be
// modified after New.
type Config struct {
	// ProjectIDAllowList (projectid_allow_list) holds the projects whose
	// instances may attest; at least one is required, as in SPIRE.
	ProjectIDAllowList []string

	// AgentPathTemplate (agent_path_template) is a text/template for the
	// agent ID's path below /spire/agent, with SPIRE's data: .PluginName
	// ("gcp_iit"), .ProjectID, .ProjectNumber, .Zone, .InstanceID,
	// .InstanceName and .InstanceCreationTimestamp, all from the verified
	// token; arbor adds .TrustDomain and .Labels (the instance's labels of
	// AllowedLabelKeys, from the Compute API, so only with
	// UseInstanceMetadata). The functions are sprig's lower, upper, trim,
	// trimAll, trimPrefix, trimSuffix, replace, contains, hasPrefix,
	// hasSuffix, base, dir, sha1sum and sha256sum. A missing key is an
	// error. If empty, DefaultAgentPathTemplate is used.
	AgentPathTemplate string

	// UseInstanceMetadata (use_instance_metadata) reads the instance from
	// the Compute API (instances.get) on every attestation, for the tag,
	// sa, label and metadata selectors.
	UseInstanceMetadata bool
	// AllowedLabelKeys and AllowedMetadataKeys (allowed_label_keys,
	// allowed_metadata_keys) name the labels and metadata items that become
	// selectors; others are ignored.
	AllowedLabelKeys    []string
	AllowedMetadataKeys []string
	// MaxMetadataValueSize (max_metadata_value_size) bounds, in bytes, the
	// value of an allowed metadata item; an instance with a longer one is
	// refused. Zero means DefaultMaxMetadataValueSize.
	MaxMetadataValueSize int
	// ServiceAccountFile (service_account_file) is a service account key
	// file for the Compute API. Empty means Application Default
	// Credentials. It is not read when HTTPClient is set.
	ServiceAccountFile string

	// KeysURL is where Google's signing keys are fetched: a JSON Web Key
	// Set, or an object of key ID to PEM certificate (Google's v1 format).
	// Empty means DefaultKeysURL.
	KeysURL string
	// KeysRefreshInterval is the least time between two fetches of the
	// keys. The keys are kept for the max-age their answer gives (at least
	// this interval, at most 24h); a token whose kid is not among them
	// fetches them again, but only once per interval, however many agents
	// present such tokens. Zero means DefaultKeysRefreshInterval.
	KeysRefreshInterval time.Duration
	// ComputeEndpoint, when set, replaces the Compute API's base URL
	// (https://compute.googleapis.com/compute/v1/): private endpoints,
	// tests. An absolute URL.
	ComputeEndpoint string
	// HTTPClient, when set, is the client both the keys and the Compute API
	// are fetched with, used as is: no credentials are added to it (a
	// fake needs none; otherwise it must authenticate itself). Nil means
	// default clients, the Compute one adding ServiceAccountFile's or the
	// default credentials. Redirects are never followed and responses are
	// bounded either way.
	HTTPClient *http.Client
	// Timeout bounds the Google calls of one attestation; zero means
	// DefaultTimeout.
	Timeout time.Duration
	// Now is the clock tokens are checked against; nil means time.Now.
	Now func() time.Time
}

// Attestor verifies gcp_iit attestations on the server. It is safe for
// concurrent use.
type Attestor struct {
	td              spiffeid.TrustDomain
	cfg             Config
	projects        map[string]bool
	labelKeys       map[string]bool
	metadataKeys    map[string]bool
	maxMetadataSize int
	path            *pathTemplate
	keys            *keyCache
	compute         *computeClient
}

var _ nodeattest.Attestor = (*Attestor)(nil)

// New checks cfg and parses the path template. It calls no Google API.
func New(cfg Config, td spiffeid.TrustDomain) (*Attestor, error) {
	if td.IsZero() {
		return nil, errors.New("gcpiit: trust domain is required")
	}
	if len(cfg.ProjectIDAllowList) == 0 {
		return nil, errors.New("gcpiit: projectid_allow_list is required")
	}
	for _, p := range cfg.ProjectIDAllowList {
		if !projectIDPattern.MatchString(p) {
			return nil, fmt.Errorf("gcpiit: projectid_allow_list: %q is not a project ID", p)
		}
	}
	if cfg.MaxMetadataValueSize < 0 {
		return nil, fmt.Errorf("gcpiit: max_metadata_value_size %d is negative", cfg.MaxMetadataValueSize)
	}
	if cfg.MaxMetadataValueSize == 0 {
		cfg.MaxMetadataValueSize = DefaultMaxMetadataValueSize
	}
	if cfg.KeysRefreshInterval < 0 {
		return nil, fmt.Errorf("gcpiit: keys refresh interval %v is negative", cfg.KeysRefreshInterval)
	}
	if cfg.KeysRefreshInterval == 0 {
		cfg.KeysRefreshInterval = DefaultKeysRefreshInterval
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("gcpiit: timeout %v is negative", cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.KeysURL == "" {
		cfg.KeysURL = DefaultKeysURL
	}
	for name, e := range map[string]string{"keys URL": cfg.KeysURL, "compute endpoint": cfg.ComputeEndpoint} {
		if e == "" {
			continue
		}
		if u, err := url.Parse(e); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("gcpiit: %s %q is not an absolute http(s) URL", name, e)
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	text := cfg.AgentPathTemplate
	if text == "" {
		text = DefaultAgentPathTemplate
	}
	path, err := newPathTemplate(text)
	if err != nil {
		return nil, err
	}
	a := &Attestor{
		td:           td,
		cfg:          cfg,
		projects:     set(cfg.ProjectIDAllowList),
		labelKeys:    set(cfg.AllowedLabelKeys),
		metadataKeys: set(cfg.AllowedMetadataKeys),
		path:         path,
	}
	a.keys = newKeyCache(cfg.KeysURL, boundedhttp.Client(cfg.HTTPClient, maxKeysResponse), cfg.KeysRefreshInterval, cfg.Timeout, cfg.Now)
	if cfg.UseInstanceMetadata {
		a.compute = newComputeClient(&a.cfg)
	}
	return a, nil
}

func set(keys []string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// Type returns "gcp_iit".
func (a *Attestor) Type() string { return Type }

// Attest verifies the token's RS256 signature with Google's key of its
// kid, its issuer (https://accounts.google.com), audience
// ("spire-gcp-node-attestor") and lifetime, checks the project against the
// allow-list, reads the instance from the Compute API when
// UseInstanceMetadata is set (it must be the instance the token names, by
// ID), and returns the agent ID rendered by the path template with SPIRE's
// selectors:
//
//	gcp_iit:project-id:<project>        gcp_iit:zone:<zone>
//	gcp_iit:instance-name:<name>
//	gcp_iit:tag:<network tag>           gcp_iit:sa:<service account email>
//	gcp_iit:label:<key>:<value>         gcp_iit:metadata:<key>:<value>
//
// the last four only with UseInstanceMetadata, labels and metadata only for
// the allowed keys. Every identity field is read from the signed bytes of
// the token. The result is trust on first use and cannot be re-attested
// with the same token. It sends no challenge.
func (a *Attestor) Attest(ctx context.Context, payload []byte, _ nodeattest.ChallengeFunc) (*nodeattest.Result, error) {
	tok, err := verifyToken(ctx, payload, a.keys.key, a.cfg.Now())
	if err != nil {
		return nil, err
	}
	ce := tok.Google.ComputeEngine
	if !a.projects[ce.ProjectID] {
		return nil, fmt.Errorf("gcpiit: %w: project %q is not in projectid_allow_list", nodeattest.ErrDenied, ce.ProjectID)
	}

	var inst *compute.Instance
	if a.compute != nil {
		ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
		defer cancel()
		if inst, err = a.compute.instance(ctx, ce); err != nil {
			return nil, err
		}
	}
	data := templateData{
		PluginName:                Type,
		TrustDomain:               a.td.Name(),
		ProjectID:                 ce.ProjectID,
		ProjectNumber:             ce.ProjectNumber,
		Zone:                      ce.Zone,
		InstanceID:                ce.InstanceID,
		InstanceName:              ce.InstanceName,
		InstanceCreationTimestamp: ce.InstanceCreationTimestamp,
	}
	if inst != nil {
		data.Labels = map[string]string{}
		for k, v := range inst.Labels {
			if a.labelKeys[k] {
				data.Labels[k] = v
			}
		}
	}
	agentID, err := a.path.agentID(a.td, data)
	if err != nil {
		return nil, fmt.Errorf("gcpiit: %w: instance %s: %v", nodeattest.ErrDenied, ce.InstanceID, err)
	}
	sels, err := a.selectors(ce, inst)
	if err != nil {
		return nil, err
	}
	return &nodeattest.Result{
		AgentID:     agentID,
		Selectors:   sels,
		CanReattest: false,
		FirstUse:    true,
	}, nil
}

func (a *Attestor) selectors(ce computeEngine, inst *compute.Instance) ([]selector.Selector, error) {
	var sels []selector.Selector
	add := func(value string) { sels = append(sels, selector.Selector{Type: Type, Value: value}) }
	add("project-id:" + ce.ProjectID)
	add("zone:" + ce.Zone)
	add("instance-name:" + ce.InstanceName)
	if inst == nil {
		return selector.Sorted(sels), nil
	}
	if inst.Tags != nil {
		for _, t := range inst.Tags.Items {
			if t != "" {
				add("tag:" + t)
			}
		}
	}
	for _, sa := range inst.ServiceAccounts {
		if sa != nil && sa.Email != "" {
			add("sa:" + sa.Email)
		}
	}
	for k, v := range inst.Labels {
		if a.labelKeys[k] {
			add("label:" + k + ":" + v)
		}
	}
	if inst.Metadata != nil {
		for _, item := range inst.Metadata.Items {
			if item == nil || !a.metadataKeys[item.Key] {
				continue
			}
			var v string
			if item.Value != nil {
				v = *item.Value
			}
			if len(v) > a.cfg.MaxMetadataValueSize {
				return nil, fmt.Errorf("gcpiit: %w: instance %s: metadata %q is %d bytes, over max_metadata_value_size %d",
					nodeattest.ErrDenied, ce.InstanceID, item.Key, len(v), a.cfg.MaxMetadataValueSize)
			}
			add("metadata:" + item.Key + ":" + v)
		}
	}
	return selector.Sorted(sels), nil
}

// instanceIDString formats a Compute API instance ID as the token does.
func instanceIDString(id uint64) string { return strconv.FormatUint(id, 10) }
