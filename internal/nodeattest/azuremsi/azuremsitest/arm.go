package azuremsitest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
)

// VM is a virtual machine as Resource Manager describes it.
type VM struct {
	SubscriptionID, ResourceGroup, Name string
	Location                            string // e.g. "westeurope"
	// PrincipalID and TenantID are the system-assigned identity's; an
	// empty PrincipalID is a VM without one.
	PrincipalID, TenantID string
	// NICs are the IDs of its network interfaces (NICID), the first
	// primary.
	NICs []string
}

// ID is the VM's resource ID as Resource Manager writes it.
func (v VM) ID() string {
	return armID(v.SubscriptionID, v.ResourceGroup, "Microsoft.Compute/virtualMachines", v.Name)
}

// NIC is a network interface as Resource Manager describes it.
type NIC struct {
	SubscriptionID, ResourceGroup, Name string
	Location                            string
	// NetworkSecurityGroup is the ID of its security group (NSGID), or "".
	NetworkSecurityGroup string
	// Subnets are the subnet IDs (SubnetID) of its IP configurations, one
	// configuration each.
	Subnets []string
	// VM is the ID of the VM it is attached to, or "".
	VM string
}

// ID is the interface's resource ID.
func (n NIC) ID() string { return NICID(n.SubscriptionID, n.ResourceGroup, n.Name) }

// Call is one request the fake answered.
type Call struct {
	Method, Path, APIVersion string
	Authorized               bool
}

var (
	reVMPath  = regexp.MustCompile(`(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Compute/virtualMachines/[^/]+$`)
	reNICPath = regexp.MustCompile(`(?i)^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/networkInterfaces/[^/]+$`)
)

// ARM is a fake Azure Resource Manager over TLS answering the reads
// azure_msi makes, with the JSON Resource Manager returns:
//
//	GET /subscriptions/<s>/resourceGroups/<g>/providers/Microsoft.Compute/virtualMachines/<name>?api-version=...
//	GET /subscriptions/<s>/resourceGroups/<g>/providers/Microsoft.Network/networkInterfaces/<name>?api-version=...
//
// Paths match in any case, as in Resource Manager. Every request must carry
// one of the bearer tokens given to NewARM (401 InvalidAuthenticationToken
// otherwise); an unknown resource is 404 ResourceNotFound. It is safe for
// concurrent use.
type ARM struct {
	srv    *httptest.Server
	tokens map[string]bool

	mu      sync.Mutex
	vms     map[string]VM
	nics    map[string]NIC
	calls   []Call
	failing int // status every request gets, 0: none
}

// NewARM starts a Resource Manager accepting tokens.
func NewARM(tokens ...string) *ARM {
	a := &ARM{tokens: map[string]bool{}, vms: map[string]VM{}, nics: map[string]NIC{}}
	for _, t := range tokens {
		a.tokens[t] = true
	}
	a.srv = httptest.NewTLSServer(http.HandlerFunc(a.serve))
	return a
}

// URL is the base URL (azuremsi's ARMEndpoint).
func (a *ARM) URL() string { return a.srv.URL + "/" }

// Client returns an HTTP client that trusts the fake's certificate.
func (a *ARM) Client() *http.Client { return a.srv.Client() }

// Close stops the server.
func (a *ARM) Close() { a.srv.Close() }

// PutVM adds or replaces a virtual machine.
func (a *ARM) PutVM(vm VM) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.vms[strings.ToLower(vm.ID())] = vm
}

// DeleteVM removes a virtual machine.
func (a *ARM) DeleteVM(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.vms, strings.ToLower(id))
}

// PutNIC adds or replaces a network interface.
func (a *ARM) PutNIC(nic NIC) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.nics[strings.ToLower(nic.ID())] = nic
}

// SetFailure makes every request fail with status (an outage); 0 ends it.
func (a *ARM) SetFailure(status int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failing = status
}

// Calls returns the requests answered, in order.
func (a *ARM) Calls() []Call {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Call(nil), a.calls...)
}

func (a *ARM) serve(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	authorized := ok && a.tokens[token]
	a.mu.Lock()
	a.calls = append(a.calls, Call{Method: r.Method, Path: r.URL.Path, APIVersion: r.URL.Query().Get("api-version"), Authorized: authorized})
	failing := a.failing
	key := strings.ToLower(r.URL.Path)
	vm, isVM := a.vms[key]
	nic, isNIC := a.nics[key]
	a.mu.Unlock()

	switch {
	case !authorized:
		w.Header().Set("WWW-Authenticate", `Bearer authorization_uri="https://login.microsoftonline.com/common", error="invalid_token", error_description="The authentication failed because of missing 'Authorization' header."`)
		armError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", "The access token is invalid.")
	case failing != 0:
		armError(w, failing, "InternalServerError", "Encountered internal server error.")
	case r.Method != http.MethodGet:
		armError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "The requested method is not allowed.")
	case r.URL.Query().Get("api-version") == "":
		armError(w, http.StatusBadRequest, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.")
	case reVMPath.MatchString(r.URL.Path):
		if !isVM {
			armError(w, http.StatusNotFound, "ResourceNotFound", fmt.Sprintf("The Resource 'Microsoft.Compute/virtualMachines/%s' was not found.", r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]))
			return
		}
		writeJSON(w, http.StatusOK, vmJSON(vm))
	case reNICPath.MatchString(r.URL.Path):
		if !isNIC {
			armError(w, http.StatusNotFound, "ResourceNotFound", fmt.Sprintf("The Resource 'Microsoft.Network/networkInterfaces/%s' was not found.", r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]))
			return
		}
		writeJSON(w, http.StatusOK, nicJSON(nic))
	default:
		armError(w, http.StatusNotFound, "InvalidResourceType", "The resource type could not be found.")
	}
}

func vmJSON(vm VM) map[string]any {
	nics := make([]map[string]any, len(vm.NICs))
	for i, id := range vm.NICs {
		nics[i] = map[string]any{"id": id, "properties": map[string]any{"primary": i == 0}}
	}
	out := map[string]any{
		"name":     vm.Name,
		"id":       vm.ID(),
		"type":     "Microsoft.Compute/virtualMachines",
		"location": vm.Location,
		"properties": map[string]any{
			"vmId":              "0f47b100-583c-48e3-a4c0-aefc2c9bbcc1",
			"hardwareProfile":   map[string]any{"vmSize": "Standard_D2s_v3"},
			"provisioningState": "Succeeded",
			"storageProfile": map[string]any{
				"imageReference": map[string]any{"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"},
				"osDisk":         map[string]any{"osType": "Linux", "name": vm.Name + "_OsDisk_1", "createOption": "FromImage", "caching": "ReadWrite", "diskSizeGB": 30},
			},
			"osProfile":      map[string]any{"computerName": vm.Name, "adminUsername": "azureuser", "linuxConfiguration": map[string]any{"disablePasswordAuthentication": true}},
			"networkProfile": map[string]any{"networkInterfaces": nics},
			"timeCreated":    "2026-02-27T09:12:44.0000000+00:00",
		},
	}
	if vm.PrincipalID != "" {
		out["identity"] = map[string]any{"type": "SystemAssigned", "principalId": vm.PrincipalID, "tenantId": vm.TenantID}
	}
	return out
}

func nicJSON(nic NIC) map[string]any {
	ipcs := make([]map[string]any, len(nic.Subnets))
	for i, subnet := range nic.Subnets {
		name := fmt.Sprintf("ipconfig%d", i+1)
		ipcs[i] = map[string]any{
			"name": name,
			"id":   nic.ID() + "/ipConfigurations/" + name,
			"type": "Microsoft.Network/networkInterfaces/ipConfigurations",
			"properties": map[string]any{
				"provisioningState":         "Succeeded",
				"privateIPAddress":          fmt.Sprintf("10.0.%d.4", i),
				"privateIPAllocationMethod": "Dynamic",
				"subnet":                    map[string]any{"id": subnet},
				"primary":                   i == 0,
				"privateIPAddressVersion":   "IPv4",
			},
		}
	}
	props := map[string]any{
		"provisioningState":           "Succeeded",
		"resourceGuid":                "6b5ee8e1-3f44-4e4a-a3c5-2a0b0a0c0d0e",
		"ipConfigurations":            ipcs,
		"enableAcceleratedNetworking": false,
		"enableIPForwarding":          false,
		"primary":                     true,
		"macAddress":                  "00-0D-3A-1B-2C-3D",
		"nicType":                     "Standard",
	}
	if nic.NetworkSecurityGroup != "" {
		props["networkSecurityGroup"] = map[string]any{"id": nic.NetworkSecurityGroup}
	}
	if nic.VM != "" {
		props["virtualMachine"] = map[string]any{"id": nic.VM}
	}
	return map[string]any{
		"name":       nic.Name,
		"id":         nic.ID(),
		"etag":       `W/"00000000-0000-0000-0000-000000000000"`,
		"type":       "Microsoft.Network/networkInterfaces",
		"location":   nic.Location,
		"properties": props,
	}
}

func armError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("x-ms-error-code", code)
	writeJSON(w, status, map[string]any{"error": map[string]any{"code": code, "message": msg}})
}
