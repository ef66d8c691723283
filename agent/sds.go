package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/arborid/arbor/internal/selector"
)

// This file is Envoy's Secret Discovery Service (SDS v3), served on the
// Workload API socket as spire-agent serves it: the caller is attested from
// the socket's peer credentials as a Workload API caller is (without the
// workload.spiffe.io header, which Envoy does not send), and gets its
// X509-SVIDs as TLS certificate secrets and its bundles as validation
// contexts, from the same cache, pushed again when an SVID rotates or a
// bundle changes. The resource names and the answers are spire-agent's
// (v1.13), so an Envoy configured for spire-agent works unchanged:
//
//   - a TLS certificate is named by its SPIFFE ID; DefaultSVIDName names the
//     workload's first SVID (its oldest entry's);
//   - a validation context is named by a trust domain ID (spiffe://td): the
//     agent's own, or one the workload's entries federate with;
//     DefaultBundleName names the own one, DefaultAllBundlesName all of them;
//   - no resource names asks for everything: the bundles under their trust
//     domain IDs and every SVID under its SPIFFE ID;
//   - a name the workload may not have fails the stream with InvalidArgument
//     (spire-agent's message), so a caller with no entry gets no certificate:
//     only its trust domain's bundle, which is public;
//   - validation contexts use Envoy's SPIFFE certificate validator, unless
//     Envoy is older than 1.18 (it says so in its node's build version) or
//     disable_spiffe_cert_validation is set (in the config, or in the node's
//     metadata, which wins); then a plain trusted_ca;
//   - version_info counts the responses of a stream, each with a fresh nonce;
//     a request whose response_nonce is not the last one sent is stale and
//     ignored, an ACK or a NACK (logged with Envoy's error) of the last one
//     changes nothing, and a request for other names is answered at once.
//
// Where spire-agent differs, arbor is the stricter or the more complete:
// every name of one request is answered (spire-agent answers only one of its
// own trust domain's, ROOTCA and ALL per request and refuses the rest), the
// node's build version is kept from the first request that has one (Envoy
// sends the node only once), a response is sent only when its content
// changed, and a type_url other than the Secret's is refused.

// SPIRE's default SDS resource names (spire-agent's sds block).
const (
	DefaultSDSSVIDName       = "default"
	DefaultSDSBundleName     = "ROOTCA"
	DefaultSDSAllBundlesName = "ALL"
)

// SDSConfig configures SDS as spire-agent's sds block does, with one
// setting of arbor's: Disabled. Empty names mean SPIRE's defaults.
type SDSConfig struct {
	// Disabled leaves SDS off the socket (a call gets Unimplemented).
	Disabled bool
	// DefaultSVIDName (default_svid_name) names the workload's first
	// X509-SVID. Default "default".
	DefaultSVIDName string
	// DefaultBundleName (default_bundle_name) names the validation context
	// of the agent's own trust domain. Default "ROOTCA".
	DefaultBundleName string
	// DefaultAllBundlesName (default_all_bundles_name) names the validation
	// context of every bundle the workload may use: the own trust domain's
	// and the federated ones its entries name. It needs Envoy's SPIFFE
	// validator. Default "ALL".
	DefaultAllBundlesName string
	// DisableSPIFFECertValidation (disable_spiffe_cert_validation) sends
	// validation contexts as a plain trusted_ca instead of Envoy's SPIFFE
	// certificate validator. An Envoy node's metadata
	// disable_spiffe_cert_validation (a bool, or a string strconv.ParseBool
	// reads) overrides it for that Envoy.
	DisableSPIFFECertValidation bool
}

func (c SDSConfig) names() (svid, bundle, all string) {
	pick := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	return pick(c.DefaultSVIDName, DefaultSDSSVIDName), pick(c.DefaultBundleName, DefaultSDSBundleName),
		pick(c.DefaultAllBundlesName, DefaultSDSAllBundlesName)
}

func (c SDSConfig) validate() error {
	svid, bundle, all := c.names()
	named := []struct{ attr, v string }{
		{"default_svid_name", svid}, {"default_bundle_name", bundle}, {"default_all_bundles_name", all},
	}
	for i, a := range named {
		if strings.HasPrefix(a.v, "spiffe://") {
			return fmt.Errorf("agent: sds: %s %q starts with spiffe://, which names SVIDs and trust domains; choose a name without it", a.attr, a.v)
		}
		for _, b := range named[:i] {
			if a.v == b.v {
				return fmt.Errorf("agent: sds: %s and %s are both %q; one name cannot ask for two secrets", b.attr, a.attr, a.v)
			}
		}
	}
	return nil
}

// secretTypeURL is the type of every SDS resource.
const secretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// spiffeValidatorName is Envoy's SPIFFE certificate validator extension.
const spiffeValidatorName = "envoy.tls.cert_validator.spiffe"

// nodeDisableValidationKey is the Envoy node metadata key that overrides
// SDSConfig.DisableSPIFFECertValidation, as in spire-agent.
const nodeDisableValidationKey = "disable_spiffe_cert_validation"

type sdsHandler struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	a                             *Agent
	svidName, bundleName, allName string
	noSPIFFEValidator             bool
}

func newSDSHandler(a *Agent) *sdsHandler {
	h := &sdsHandler{a: a, noSPIFFEValidator: a.cfg.SDS.DisableSPIFFECertValidation}
	h.svidName, h.bundleName, h.allName = a.cfg.SDS.names()
	return h
}

var _ secretv3.SecretDiscoveryServiceServer = (*sdsHandler)(nil)

// sdsSecret is one resource of a response and what it is built from: an
// SVID (a TLS certificate) or bundles (a validation context).
type sdsSecret struct {
	name    string
	svid    *x509SVID
	bundles []*bundleView
}

// sameSecrets reports whether two responses would hold the same secrets.
func sameSecrets(a, b []sdsSecret) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.name != y.name || x.svid != y.svid || len(x.bundles) != len(y.bundles) {
			return false
		}
		for j := range x.bundles {
			if x.bundles[j].td != y.bundles[j].td || !bytes.Equal(x.bundles[j].x509DER, y.bundles[j].x509DER) {
				return false
			}
		}
	}
	return true
}

// sdsUsable reports whether v can answer a workload with selectors sels:
// the agent has synced, has a bundle, and (when first is set, for a
// stream's first response, as spire-agent waits) every entry of the
// workload has its SVID.
func sdsUsable(v *view, sels []selector.Selector, first bool) bool {
	if !v.ready || v.bundle == nil {
		return false
	}
	if !first {
		return true
	}
	for _, ce := range v.match(sels) {
		if ce.svid.Load() == nil {
			return false
		}
	}
	return true
}

// resolve returns the secrets names ask for, for a workload with selectors
// sels; no names means every SVID and bundle. spiffe tells whether
// validation contexts use the SPIFFE validator (ALL needs it).
func (h *sdsHandler) resolve(v *view, sels []selector.Selector, names []string, spiffe bool) ([]sdsSecret, error) {
	matched := v.match(sels)
	ids := identities(matched)
	fed := v.federatedFor(matched)
	own := v.bundle
	var out []sdsSecret
	if wanted := nonEmpty(names); len(wanted) > 0 {
		var unknown []string
		for _, name := range wanted {
			if s, ok, err := h.lookup(name, own, fed, ids, spiffe); err != nil {
				return nil, err
			} else if ok {
				out = append(out, s)
			} else {
				unknown = append(unknown, name)
			}
		}
		if len(unknown) > 0 {
			slices.Sort(unknown)
			return nil, status.Errorf(codes.InvalidArgument, "workload is not authorized for the requested identities %q", unknown)
		}
		return out, nil
	}
	out = append(out, sdsSecret{name: own.td.IDString(), bundles: []*bundleView{own}})
	for _, f := range fed {
		out = append(out, sdsSecret{name: f.td.IDString(), bundles: []*bundleView{f}})
	}
	seen := map[string]bool{}
	for _, id := range ids {
		name := id.entry.spiffeID.String()
		if !seen[name] {
			seen[name] = true
			out = append(out, sdsSecret{name: name, svid: id.svid})
		}
	}
	return out, nil
}

// lookup finds the one secret called name.
func (h *sdsHandler) lookup(name string, own *bundleView, fed []*bundleView, ids []identity, spiffe bool) (sdsSecret, bool, error) {
	switch name {
	case own.td.IDString(), h.bundleName:
		return sdsSecret{name: name, bundles: []*bundleView{own}}, true, nil
	case h.allName:
		if !spiffe {
			// One trusted_ca holding every trust domain's roots would let a
			// federated CA vouch for IDs of any trust domain.
			return sdsSecret{}, false, status.Errorf(codes.FailedPrecondition,
				"%q (all bundles) needs Envoy's SPIFFE certificate validator: Envoy 1.18 or later, with disable_spiffe_cert_validation unset; ask for each trust domain's validation context instead", name)
		}
		all := append([]*bundleView{own}, fed...)
		slices.SortFunc(all, func(a, b *bundleView) int { return strings.Compare(a.td.Name(), b.td.Name()) })
		return sdsSecret{name: name, bundles: all}, true, nil
	case h.svidName:
		if len(ids) > 0 {
			return sdsSecret{name: name, svid: ids[0].svid}, true, nil
		}
		return sdsSecret{}, false, nil
	}
	for _, f := range fed {
		if name == f.td.IDString() {
			return sdsSecret{name: name, bundles: []*bundleView{f}}, true, nil
		}
	}
	for _, id := range ids {
		if name == id.entry.spiffeID.String() {
			return sdsSecret{name: name, svid: id.svid}, true, nil
		}
	}
	return sdsSecret{}, false, nil
}

// nonEmpty returns names without empty strings and repeats, in order.
func nonEmpty(names []string) []string {
	var out []string
	for _, n := range names {
		if n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// spiffeValidator tells whether validation contexts for Envoy node use the
// SPIFFE certificate validator: not when disabled (by the config, or by the
// node's metadata, which wins when it holds a boolean), nor for an Envoy
// that says it is older than 1.18; an Envoy that does not say is taken to
// be recent, as spire-agent does.
func (h *sdsHandler) spiffeValidator(node *corev3.Node) bool {
	disabled := h.noSPIFFEValidator
	if v, ok := node.GetMetadata().GetFields()[nodeDisableValidationKey]; ok {
		switch k := v.GetKind().(type) {
		case *structpb.Value_BoolValue:
			disabled = k.BoolValue
		case *structpb.Value_StringValue:
			if b, err := strconv.ParseBool(k.StringValue); err == nil {
				disabled = b
			}
		}
	}
	if disabled {
		return false
	}
	bv := node.GetUserAgentBuildVersion()
	if bv == nil {
		return true
	}
	major, minor := bv.GetVersion().GetMajorNumber(), bv.GetVersion().GetMinorNumber()
	return major > 1 || (major == 1 && minor > 17)
}

// build turns secrets into the resources of a response.
func buildSecrets(secrets []sdsSecret, spiffe bool) ([]*anypb.Any, error) {
	out := make([]*anypb.Any, 0, len(secrets))
	for _, s := range secrets {
		var sec *tlsv3.Secret
		if s.svid != nil {
			chain, err := chainPEM(s.svid.chainDER)
			if err != nil {
				return nil, err
			}
			key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: s.svid.keyDER})
			sec = &tlsv3.Secret{Name: s.name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: inline(chain),
				PrivateKey:       inline(key),
			}}}
		} else {
			vc, err := validationContext(s.bundles, spiffe)
			if err != nil {
				return nil, err
			}
			sec = &tlsv3.Secret{Name: s.name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: vc}}
		}
		a, err := anypb.New(sec)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "encoding secret %q: %v", s.name, err)
		}
		out = append(out, a)
	}
	return out, nil
}

func validationContext(bundles []*bundleView, spiffe bool) (*tlsv3.CertificateValidationContext, error) {
	if !spiffe {
		// resolve gives a trusted_ca one bundle only.
		return &tlsv3.CertificateValidationContext{TrustedCa: inline(rootsPEM(bundles[0]))}, nil
	}
	cfg := &tlsv3.SPIFFECertValidatorConfig{}
	for _, b := range bundles {
		cfg.TrustDomains = append(cfg.TrustDomains, &tlsv3.SPIFFECertValidatorConfig_TrustDomain{
			Name: b.td.Name(), TrustBundle: inline(rootsPEM(b)),
		})
	}
	typed, err := anypb.New(cfg)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encoding the SPIFFE validator config: %v", err)
	}
	return &tlsv3.CertificateValidationContext{CustomValidatorConfig: &corev3.TypedExtensionConfig{
		Name: spiffeValidatorName, TypedConfig: typed,
	}}, nil
}

func inline(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

func rootsPEM(b *bundleView) []byte {
	var out []byte
	for _, c := range b.roots {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// chainPEM splits a chain of concatenated DER certificates (as the cache
// keeps it) into PEM blocks without parsing the certificates again.
func chainPEM(der []byte) ([]byte, error) {
	var out []byte
	for rest := der; len(rest) > 0; {
		var raw asn1.RawValue
		next, err := asn1.Unmarshal(rest, &raw)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "cached X509-SVID chain: %v", err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: raw.FullBytes})...)
		rest = next
	}
	return out, nil
}

func checkTypeURL(u string) error {
	if u != "" && u != secretTypeURL {
		return status.Errorf(codes.InvalidArgument, "type_url %q is not SDS's %q", u, secretTypeURL)
	}
	return nil
}

func sdsPID(ctx context.Context) int32 {
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(PeerInfo); ok {
			return info.PID
		}
	}
	return 0
}

func (h *sdsHandler) DeltaSecrets(secretv3.SecretDiscoveryService_DeltaSecretsServer) error {
	return status.Error(codes.Unimplemented, "DeltaSecrets is not implemented: use StreamSecrets (SDS api_type GRPC)")
}

func (h *sdsHandler) FetchSecrets(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	if err := checkTypeURL(req.TypeUrl); err != nil {
		return nil, err
	}
	sels, err := h.a.attestWorkload(ctx)
	if err != nil {
		return nil, err
	}
	if err := h.a.waitReady(ctx); err != nil {
		return nil, err
	}
	v, _ := h.a.cache.load()
	if v.bundle == nil {
		return nil, status.Error(codes.Unavailable, "agent has no trust bundle yet")
	}
	spiffe := h.spiffeValidator(req.Node)
	secrets, err := h.resolve(v, sels, req.ResourceNames, spiffe)
	if err != nil {
		return nil, err
	}
	res, err := buildSecrets(secrets, spiffe)
	if err != nil {
		return nil, err
	}
	return &discoveryv3.DiscoveryResponse{TypeUrl: secretTypeURL, Resources: res}, nil
}

// sdsStream is the state of one StreamSecrets call.
type sdsStream struct {
	requested bool     // a request was accepted
	names     []string // its resource names
	node      *corev3.Node
	force     bool // the names changed: answer even if the content did not

	sent      []sdsSecret // the last response's secrets
	sentSPIFE bool
	version   int64
	nonce     string
}

func (h *sdsHandler) StreamSecrets(stream secretv3.SecretDiscoveryService_StreamSecretsServer) error {
	ctx := stream.Context()
	sels, err := h.a.attestWorkload(ctx)
	if err != nil {
		return err
	}
	log := h.a.log.With("pid", sdsPID(ctx))
	reqs := make(chan *discoveryv3.DiscoveryRequest)
	recvErr := make(chan error, 1)
	// The receiver ends when the stream does: Recv fails once the handler
	// has returned and the stream's context is canceled.
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	var st sdsStream
	for {
		v, changed := h.a.cache.load()
		if st.requested && sdsUsable(v, sels, st.version == 0) {
			if err := h.push(stream, &st, v, sels); err != nil {
				if ctx.Err() == nil {
					log.Warn("SDS stream ended", "names", st.names, "err", err)
				}
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
				return nil
			}
			return err
		case req := <-reqs:
			if err := checkTypeURL(req.TypeUrl); err != nil {
				return err
			}
			if req.ErrorDetail != nil {
				log.Error("Envoy could not apply secrets", "names", req.ResourceNames, "version", req.VersionInfo, "err", req.ErrorDetail.GetMessage())
			}
			if st.nonce != "" && req.ResponseNonce != st.nonce {
				log.Debug("ignoring an SDS request with a stale nonce", "nonce", req.ResponseNonce, "want", st.nonce)
				continue
			}
			if st.nonce != "" && req.VersionInfo != strconv.FormatInt(st.version, 10) {
				log.Warn("Envoy rejected SDS version; it keeps the previous one", "version", st.version, "kept", req.VersionInfo)
			}
			if req.Node != nil {
				st.node = req.Node
			}
			if !st.requested || !sameNameSet(st.names, req.ResourceNames) {
				st.force = true
			}
			st.requested, st.names = true, req.ResourceNames
		case <-changed:
		}
	}
}

// push sends the secrets st asks for when they differ from the last ones
// sent, or when the names changed.
func (h *sdsHandler) push(stream secretv3.SecretDiscoveryService_StreamSecretsServer, st *sdsStream, v *view, sels []selector.Selector) error {
	spiffe := h.spiffeValidator(st.node)
	secrets, err := h.resolve(v, sels, st.names, spiffe)
	if err != nil {
		return err
	}
	if !st.force && st.version > 0 && spiffe == st.sentSPIFE && sameSecrets(secrets, st.sent) {
		return nil
	}
	res, err := buildSecrets(secrets, spiffe)
	if err != nil {
		return err
	}
	var n [8]byte
	rand.Read(n[:])
	resp := &discoveryv3.DiscoveryResponse{
		VersionInfo: strconv.FormatInt(st.version+1, 10),
		Nonce:       hex.EncodeToString(n[:]),
		TypeUrl:     secretTypeURL,
		Resources:   res,
	}
	if err := stream.Send(resp); err != nil {
		return err
	}
	st.version++
	st.nonce, st.sent, st.sentSPIFE, st.force = resp.Nonce, secrets, spiffe, false
	h.a.metrics.sdsResponses.Inc()
	return nil
}

// sameNameSet compares resource name lists as sets, empty names left out.
func sameNameSet(a, b []string) bool {
	x, y := nonEmpty(a), nonEmpty(b)
	if len(x) != len(y) {
		return false
	}
	for _, n := range x {
		if !slices.Contains(y, n) {
			return false
		}
	}
	return true
}
