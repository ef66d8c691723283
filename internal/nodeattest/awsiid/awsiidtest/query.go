package awsiidtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// AWS is a Query API server over TLS standing in for EC2 (DescribeInstances,
// in the EC2 protocol), IAM (GetInstanceProfile) and STS (AssumeRole), both
// in the AWS Query protocol: form-encoded POSTs answered in XML. Every
// request must carry a well-formed Signature Version 4 Authorization
// header whose signature the server recomputes with the secret of the
// access key it names (the configured key, or one AssumeRole issued) and
// whose scope names the service of the action; anything else is refused
// as AWS refuses it.
type AWS struct {
	srv *httptest.Server

	mu        sync.Mutex
	instances map[string]Instance
	profiles  map[string][]string
	creds     map[string]credential
	calls     []Call
	issued    int
}

type credential struct {
	secret, token string
	role          string // the role an AssumeRole credential belongs to
}

// Call records one request the server answered.
type Call struct {
	Action      string // DescribeInstances, GetInstanceProfile, AssumeRole
	Service     string // from the signature's scope
	Region      string // from the signature's scope
	AccessKeyID string
	// Role is the role whose AssumeRole credentials signed the request;
	// empty for the configured key.
	Role string
	// RoleARN is the role an AssumeRole call asked for.
	RoleARN string
	// InstanceIDs are the instances a DescribeInstances call asked for.
	InstanceIDs []string
}

// Instance is an EC2 instance as DescribeInstances describes it.
type Instance struct {
	ID             string
	ImageID        string
	InstanceType   string
	State          string // pending, running, stopped, terminated; empty means running
	RootDeviceName string // e.g. /dev/xvda
	RootDeviceType string // ebs or instance-store; empty means ebs
	BlockDevices   []BlockDevice
	Interfaces     []NetworkInterface
	SecurityGroups []SecurityGroup
	Tags           []Tag
	// InstanceProfileARN is the ARN of the instance's IAM instance profile.
	InstanceProfileARN string
}

// BlockDevice is an EBS volume attached to an instance.
type BlockDevice struct {
	DeviceName string
	VolumeID   string
	AttachTime time.Time
}

// NetworkInterface is a network interface attached to an instance.
type NetworkInterface struct {
	ID          string
	DeviceIndex int
	AttachTime  time.Time
}

// SecurityGroup is a security group an instance is in.
type SecurityGroup struct{ ID, Name string }

// Tag is an instance tag.
type Tag struct{ Key, Value string }

// NewAWS starts the server; requests signed with accessKeyID and
// secretAccessKey are accepted. Close it when done.
func NewAWS(accessKeyID, secretAccessKey string) *AWS {
	a := &AWS{
		instances: map[string]Instance{},
		profiles:  map[string][]string{},
		creds:     map[string]credential{accessKeyID: {secret: secretAccessKey}},
	}
	a.srv = httptest.NewTLSServer(http.HandlerFunc(a.serve))
	return a
}

// URL is the server's base URL, for the EC2, IAM and STS endpoints alike.
func (a *AWS) URL() string { return a.srv.URL }

// Client returns an HTTP client that trusts the server's certificate.
func (a *AWS) Client() *http.Client { return a.srv.Client() }

// Certificate is the server's TLS certificate (for a CA bundle file such as
// AWS_CA_BUNDLE).
func (a *AWS) Certificate() *x509.Certificate { return a.srv.Certificate() }

// Close stops the server.
func (a *AWS) Close() { a.srv.Close() }

// PutInstance adds or replaces an instance.
func (a *AWS) PutInstance(inst Instance) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.instances[inst.ID] = inst
}

// DeleteInstance removes an instance: DescribeInstances answers
// InvalidInstanceID.NotFound for it.
func (a *AWS) DeleteInstance(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.instances, id)
}

// PutInstanceProfile adds or replaces an instance profile and its roles.
func (a *AWS) PutInstanceProfile(name string, roleARNs ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.profiles[name] = roleARNs
}

// Calls returns the requests answered so far.
func (a *AWS) Calls() []Call {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

var serviceOf = map[string]string{
	"DescribeInstances":  "ec2",
	"GetInstanceProfile": "iam",
	"AssumeRole":         "sts",
}

func (a *AWS) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || r.Method != http.MethodPost {
		ec2Error(w, http.StatusBadRequest, "InvalidRequest", "want a form POST")
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		ec2Error(w, http.StatusBadRequest, "InvalidRequest", "malformed form")
		return
	}
	action := form.Get("Action")
	service, ok := serviceOf[action]
	if !ok {
		ec2Error(w, http.StatusBadRequest, "InvalidAction", fmt.Sprintf("action %q is not implemented", action))
		return
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	call, err := a.checkSignature(r, body)
	if err != nil {
		queryError(w, service, http.StatusForbidden, "SignatureDoesNotMatch", err.Error())
		return
	}
	if call.Service != service {
		queryError(w, service, http.StatusForbidden, "SignatureDoesNotMatch", fmt.Sprintf("credential scope names service %q for %s", call.Service, action))
		return
	}
	call.Action = action
	switch action {
	case "DescribeInstances":
		a.describeInstances(w, form, &call)
	case "GetInstanceProfile":
		a.getInstanceProfile(w, form)
	case "AssumeRole":
		a.assumeRole(w, form, &call)
	}
	a.calls = append(a.calls, call)
}

var authPattern = regexp.MustCompile(`^AWS4-HMAC-SHA256 Credential=([A-Z0-9]+)/([0-9]{8})/([a-z0-9-]+)/([a-z0-9]+)/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$`)

// checkSignature parses the SigV4 Authorization header and recomputes the
// signature over the headers it names.
func (a *AWS) checkSignature(r *http.Request, body []byte) (Call, error) {
	auth := r.Header.Get("Authorization")
	m := authPattern.FindStringSubmatch(auth)
	if m == nil {
		return Call{}, fmt.Errorf("malformed or missing Authorization header %q", auth)
	}
	akid, date, region, service, signed := m[1], m[2], m[3], m[4], strings.Split(m[5], ";")
	cred, ok := a.creds[akid]
	if !ok {
		return Call{}, fmt.Errorf("unknown access key %s", akid)
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil || !strings.HasPrefix(amzDate, date) {
		return Call{}, fmt.Errorf("X-Amz-Date %q does not match the credential date %s", amzDate, date)
	}
	if d := time.Since(t); d > 15*time.Minute || d < -15*time.Minute {
		return Call{}, fmt.Errorf("signature time %s is more than 15 minutes off", amzDate)
	}
	if !slices.Contains(signed, "host") || !slices.Contains(signed, "x-amz-date") {
		return Call{}, errors.New("host and x-amz-date must be signed")
	}
	if cred.token != "" && r.Header.Get("X-Amz-Security-Token") != cred.token {
		return Call{}, errors.New("missing or wrong X-Amz-Security-Token for a session credential")
	}

	again, err := http.NewRequest(r.Method, "https://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return Call{}, err
	}
	for _, h := range signed {
		switch h {
		case "host", "x-amz-date", "x-amz-security-token":
		case "content-length":
			again.ContentLength = r.ContentLength
		default:
			again.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: akid, SecretAccessKey: cred.secret, SessionToken: cred.token}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, again, hex.EncodeToString(sum[:]), service, region, t); err != nil {
		return Call{}, err
	}
	if got := again.Header.Get("Authorization"); got != auth {
		return Call{}, errors.New("the request signature we calculated does not match the signature you provided")
	}
	return Call{Service: service, Region: region, AccessKeyID: akid, Role: cred.role}, nil
}

const ec2Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

type xmlDescribeInstances struct {
	XMLName      xml.Name         `xml:"DescribeInstancesResponse"`
	Xmlns        string           `xml:"xmlns,attr"`
	RequestID    string           `xml:"requestId"`
	Reservations []xmlReservation `xml:"reservationSet>item"`
}

type xmlReservation struct {
	ReservationID string        `xml:"reservationId"`
	OwnerID       string        `xml:"ownerId"`
	Instances     []xmlInstance `xml:"instancesSet>item"`
}

type xmlInstance struct {
	InstanceID     string      `xml:"instanceId"`
	ImageID        string      `xml:"imageId"`
	State          xmlState    `xml:"instanceState"`
	InstanceType   string      `xml:"instanceType"`
	RootDeviceType string      `xml:"rootDeviceType"`
	RootDeviceName string      `xml:"rootDeviceName,omitempty"`
	BlockDevices   []xmlBDM    `xml:"blockDeviceMapping>item"`
	Profile        *xmlProfile `xml:"iamInstanceProfile"`
	Groups         []xmlGroup  `xml:"groupSet>item"`
	Tags           []xmlTag    `xml:"tagSet>item"`
	Interfaces     []xmlNIC    `xml:"networkInterfaceSet>item"`
}

type xmlState struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

type xmlBDM struct {
	DeviceName string `xml:"deviceName"`
	EBS        struct {
		VolumeID            string `xml:"volumeId"`
		Status              string `xml:"status"`
		AttachTime          string `xml:"attachTime"`
		DeleteOnTermination bool   `xml:"deleteOnTermination"`
	} `xml:"ebs"`
}

type xmlProfile struct {
	ARN string `xml:"arn"`
	ID  string `xml:"id"`
}

type xmlGroup struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

type xmlTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

type xmlNIC struct {
	NetworkInterfaceID string `xml:"networkInterfaceId"`
	Attachment         struct {
		AttachmentID string `xml:"attachmentId"`
		DeviceIndex  int    `xml:"deviceIndex"`
		Status       string `xml:"status"`
		AttachTime   string `xml:"attachTime"`
	} `xml:"attachment"`
}

var stateCodes = map[string]int{"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}

func awsTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// listParam returns the values of a Query list parameter (Name.1, Name.2, ...).
func listParam(form url.Values, name string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := form[name+"."+strconv.Itoa(i)]
		if !ok {
			return out
		}
		out = append(out, v...)
	}
}

func (a *AWS) describeInstances(w http.ResponseWriter, form url.Values, call *Call) {
	ids := listParam(form, "InstanceId")
	call.InstanceIDs = ids
	states := []string(nil)
	for i := 1; ; i++ {
		name, ok := form["Filter."+strconv.Itoa(i)+".Name"]
		if !ok {
			break
		}
		if len(name) != 1 || name[0] != "instance-state-name" {
			ec2Error(w, http.StatusBadRequest, "InvalidParameterValue", fmt.Sprintf("filter %v is not implemented", name))
			return
		}
		states = append(states, listParam(form, "Filter."+strconv.Itoa(i)+".Value")...)
	}
	if len(ids) == 0 {
		ec2Error(w, http.StatusBadRequest, "InvalidParameterCombination", "this fake describes instances by ID only")
		return
	}
	resp := xmlDescribeInstances{Xmlns: ec2Namespace, RequestID: "fake-request"}
	for _, id := range ids {
		inst, ok := a.instances[id]
		if !ok {
			ec2Error(w, http.StatusBadRequest, "InvalidInstanceID.NotFound", fmt.Sprintf("The instance ID '%s' does not exist", id))
			return
		}
		state := inst.State
		if state == "" {
			state = "running"
		}
		if states != nil && !slices.Contains(states, state) {
			continue
		}
		resp.Reservations = append(resp.Reservations, xmlReservation{
			ReservationID: "r-" + strings.TrimPrefix(id, "i-"),
			OwnerID:       "123456789012",
			Instances:     []xmlInstance{toXML(inst, state)},
		})
	}
	writeXML(w, http.StatusOK, resp)
}

func toXML(inst Instance, state string) xmlInstance {
	x := xmlInstance{
		InstanceID:     inst.ID,
		ImageID:        inst.ImageID,
		State:          xmlState{Code: stateCodes[state], Name: state},
		InstanceType:   inst.InstanceType,
		RootDeviceType: inst.RootDeviceType,
		RootDeviceName: inst.RootDeviceName,
	}
	if x.RootDeviceType == "" {
		x.RootDeviceType = "ebs"
	}
	for _, b := range inst.BlockDevices {
		var m xmlBDM
		m.DeviceName = b.DeviceName
		m.EBS.VolumeID = b.VolumeID
		m.EBS.Status = "attached"
		m.EBS.AttachTime = awsTime(b.AttachTime)
		m.EBS.DeleteOnTermination = true
		x.BlockDevices = append(x.BlockDevices, m)
	}
	for _, n := range inst.Interfaces {
		var m xmlNIC
		m.NetworkInterfaceID = n.ID
		m.Attachment.AttachmentID = "eni-attach-" + strings.TrimPrefix(n.ID, "eni-")
		m.Attachment.DeviceIndex = n.DeviceIndex
		m.Attachment.Status = "attached"
		m.Attachment.AttachTime = awsTime(n.AttachTime)
		x.Interfaces = append(x.Interfaces, m)
	}
	for _, g := range inst.SecurityGroups {
		x.Groups = append(x.Groups, xmlGroup{GroupID: g.ID, GroupName: g.Name})
	}
	for _, t := range inst.Tags {
		x.Tags = append(x.Tags, xmlTag(t))
	}
	if inst.InstanceProfileARN != "" {
		x.Profile = &xmlProfile{ARN: inst.InstanceProfileARN, ID: "AIPAFAKE"}
	}
	return x
}

type xmlGetInstanceProfile struct {
	XMLName xml.Name `xml:"GetInstanceProfileResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Result  struct {
		Profile struct {
			InstanceProfileID   string    `xml:"InstanceProfileId"`
			Roles               []xmlRole `xml:"Roles>member"`
			InstanceProfileName string    `xml:"InstanceProfileName"`
			Path                string    `xml:"Path"`
			Arn                 string    `xml:"Arn"`
			CreateDate          string    `xml:"CreateDate"`
		} `xml:"InstanceProfile"`
	} `xml:"GetInstanceProfileResult"`
	RequestID string `xml:"ResponseMetadata>RequestId"`
}

type xmlRole struct {
	Path       string `xml:"Path"`
	Arn        string `xml:"Arn"`
	RoleName   string `xml:"RoleName"`
	CreateDate string `xml:"CreateDate"`
	RoleID     string `xml:"RoleId"`
}

func (a *AWS) getInstanceProfile(w http.ResponseWriter, form url.Values) {
	name := form.Get("InstanceProfileName")
	roles, ok := a.profiles[name]
	if !ok {
		queryError(w, "iam", http.StatusNotFound, "NoSuchEntity", fmt.Sprintf("Instance Profile %s cannot be found.", name))
		return
	}
	var resp xmlGetInstanceProfile
	resp.Xmlns = "https://iam.amazonaws.com/doc/2010-05-08/"
	p := &resp.Result.Profile
	p.InstanceProfileID, p.InstanceProfileName, p.Path = "AIPAFAKE", name, "/"
	p.Arn = "arn:aws:iam::123456789012:instance-profile/" + name
	p.CreateDate = awsTime(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))
	for _, arn := range roles {
		p.Roles = append(p.Roles, xmlRole{Path: "/", Arn: arn, RoleName: arn[strings.LastIndex(arn, "/")+1:], CreateDate: p.CreateDate, RoleID: "AROAFAKE"})
	}
	resp.RequestID = "fake-request"
	writeXML(w, http.StatusOK, resp)
}

type xmlAssumeRole struct {
	XMLName xml.Name `xml:"AssumeRoleResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Result  struct {
		Credentials struct {
			AccessKeyID     string `xml:"AccessKeyId"`
			SecretAccessKey string `xml:"SecretAccessKey"`
			SessionToken    string `xml:"SessionToken"`
			Expiration      string `xml:"Expiration"`
		} `xml:"Credentials"`
		AssumedRoleUser struct {
			Arn           string `xml:"Arn"`
			AssumedRoleID string `xml:"AssumedRoleId"`
		} `xml:"AssumedRoleUser"`
	} `xml:"AssumeRoleResult"`
	RequestID string `xml:"ResponseMetadata>RequestId"`
}

var roleARNPattern = regexp.MustCompile(`^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role/[\w+=,.@/-]+$`)

func (a *AWS) assumeRole(w http.ResponseWriter, form url.Values, call *Call) {
	roleARN, session := form.Get("RoleArn"), form.Get("RoleSessionName")
	call.RoleARN = roleARN
	if !roleARNPattern.MatchString(roleARN) || session == "" {
		queryError(w, "sts", http.StatusBadRequest, "ValidationError", "invalid RoleArn or RoleSessionName")
		return
	}
	a.issued++
	akid := fmt.Sprintf("ASIAFAKE%012d", a.issued)
	cred := credential{secret: fmt.Sprintf("assumed-secret-%d", a.issued), token: fmt.Sprintf("session-token-%d", a.issued), role: roleARN}
	a.creds[akid] = cred
	var resp xmlAssumeRole
	resp.Xmlns = "https://sts.amazonaws.com/doc/2011-06-15/"
	c := &resp.Result.Credentials
	c.AccessKeyID, c.SecretAccessKey, c.SessionToken = akid, cred.secret, cred.token
	c.Expiration = awsTime(time.Now().Add(time.Hour))
	resp.Result.AssumedRoleUser.Arn = strings.Replace(strings.Replace(roleARN, ":iam::", ":sts::", 1), ":role/", ":assumed-role/", 1) + "/" + session
	resp.Result.AssumedRoleUser.AssumedRoleID = "AROAFAKE:" + session
	resp.RequestID = "fake-request"
	writeXML(w, http.StatusOK, resp)
}

func writeXML(w http.ResponseWriter, status int, v any) {
	out, err := xml.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(status)
	w.Write([]byte(xml.Header))
	w.Write(out)
}

// ec2Error answers in the EC2 protocol's error format.
func ec2Error(w http.ResponseWriter, status int, code, msg string) {
	type xmlErr struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	writeXML(w, status, struct {
		XMLName   xml.Name `xml:"Response"`
		Errors    []xmlErr `xml:"Errors>Error"`
		RequestID string   `xml:"RequestID"`
	}{Errors: []xmlErr{{code, msg}}, RequestID: "fake-request"})
}

// queryError answers in the error format of the service's protocol.
func queryError(w http.ResponseWriter, service string, status int, code, msg string) {
	if service == "ec2" {
		ec2Error(w, status, code, msg)
		return
	}
	writeXML(w, status, struct {
		XMLName xml.Name `xml:"ErrorResponse"`
		Error   struct {
			Type    string `xml:"Type"`
			Code    string `xml:"Code"`
			Message string `xml:"Message"`
		} `xml:"Error"`
		RequestID string `xml:"RequestId"`
	}{Error: struct {
		Type    string `xml:"Type"`
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}{"Sender", code, msg}, RequestID: "fake-request"})
}
