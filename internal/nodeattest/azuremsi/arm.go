package azuremsi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/compute/armcompute/v7"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/network/armnetwork/v9"

	"github.com/arborid/arbor/internal/nodeattest"
)

// maxInterfaces bounds the network interfaces read for one VM (Azure's
// largest sizes have 8).
const maxInterfaces = 32

// The resource IDs selectors are made of, as SPIRE parses them (its
// expressions, with the dots escaped). Resource Manager writes them in this
// case in the resources it returns.
var (
	reVirtualMachineID       = regexp.MustCompile(`^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/Microsoft\.Compute/virtualMachines/([^/]+)$`)
	reNetworkSecurityGroupID = regexp.MustCompile(`^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/Microsoft\.Network/networkSecurityGroups/([^/]+)$`)
	reNetworkInterfaceID     = regexp.MustCompile(`^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/Microsoft\.Network/networkInterfaces/([^/]+)$`)
	reVirtualNetworkSubnetID = regexp.MustCompile(`^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/Microsoft\.Network/virtualNetworks/([^/]+)/subnets/([^/]+)$`)
)

// reManagedIdentityVM is a VM's resource ID as xms_mirid carries it for the
// VM's system-assigned identity; Entra ID writes "resourcegroups" in lower
// case, so the path words match in any case.
var reManagedIdentityVM = regexp.MustCompile(`(?i)^/subscriptions/([0-9a-f-]{36})/resourcegroups/([^/]+)/providers/Microsoft\.Compute/virtualMachines/([^/]+)$`)

// vmRef names a virtual machine.
type vmRef struct{ subscription, resourceGroup, name string }

func (r vmRef) String() string {
	return fmt.Sprintf("%s/%s/%s", r.subscription, r.resourceGroup, r.name)
}

// parseManagedIdentityVM reads the VM out of an xms_mirid claim.
func parseManagedIdentityVM(mirid string) (vmRef, bool) {
	m := reManagedIdentityVM.FindStringSubmatch(mirid)
	if m == nil {
		return vmRef{}, false
	}
	return vmRef{subscription: strings.ToLower(m[1]), resourceGroup: m[2], name: m[3]}, true
}

// armClients reads virtual machines and network interfaces in one
// subscription.
type armClients struct {
	vms  *armcompute.VirtualMachinesClient
	nics *armnetwork.InterfacesClient
}

// armOptions are the SDK options of every Resource Manager client: the
// endpoint and audience, the bounded HTTP client, a short retry policy and
// no resource provider registration (a read needs none).
func armOptions(endpoint string, client *http.Client) *arm.ClientOptions {
	return &arm.ClientOptions{
		ClientOptions: policy.ClientOptions{
			Cloud:     armCloud(endpoint),
			Transport: client,
			Retry: policy.RetryOptions{
				MaxRetries:    2,
				RetryDelay:    200 * time.Millisecond,
				MaxRetryDelay: 2 * time.Second,
			},
		},
		DisableRPRegistration: true,
	}
}

// armCloud is the public cloud's configuration with Resource Manager at
// endpoint. Tokens are requested for Resource Manager's audience in the
// public cloud, and for the endpoint itself elsewhere.
func armCloud(endpoint string) cloud.Configuration {
	audience := endpoint
	if endpoint == defaultARMEndpoint {
		audience = "https://management.core.windows.net/"
	}
	return cloud.Configuration{
		ActiveDirectoryAuthorityHost: cloud.AzurePublic.ActiveDirectoryAuthorityHost,
		Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
			cloud.ResourceManager: {Endpoint: endpoint, Audience: audience},
		},
	}
}

func newARMClients(subscription string, cred azcore.TokenCredential, opts *arm.ClientOptions) (*armClients, error) {
	vms, err := armcompute.NewVirtualMachinesClient(subscription, cred, opts)
	if err != nil {
		return nil, fmt.Errorf("azuremsi: virtual machines client for subscription %s: %w", subscription, err)
	}
	nics, err := armnetwork.NewInterfacesClient(subscription, cred, opts)
	if err != nil {
		return nil, fmt.Errorf("azuremsi: network interfaces client for subscription %s: %w", subscription, err)
	}
	return &armClients{vms: vms, nics: nics}, nil
}

func isNotFound(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound
}

// virtualMachine reads the VM and checks that it is the one whose
// system-assigned identity the token is for. A VM Resource Manager does not
// know, or whose identity is another principal, is nodeattest.ErrDenied; a
// failing call is an internal error.
func (c *armClients) virtualMachine(ctx context.Context, ref vmRef, principalID string) (*armcompute.VirtualMachine, error) {
	resp, err := c.vms.Get(ctx, ref.resourceGroup, ref.name, nil)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("azuremsi: %w: virtual machine %s not found", nodeattest.ErrDenied, ref)
		}
		return nil, fmt.Errorf("azuremsi: getting virtual machine %s: %w", ref, err)
	}
	vm := &resp.VirtualMachine
	if vm.Identity == nil || vm.Identity.PrincipalID == nil || !strings.EqualFold(*vm.Identity.PrincipalID, principalID) {
		return nil, fmt.Errorf("azuremsi: %w: virtual machine %s has no system-assigned identity with principal %s", nodeattest.ErrDenied, ref, principalID)
	}
	if vm.ID == nil || !strings.EqualFold(*vm.ID, "/subscriptions/"+ref.subscription+"/resourceGroups/"+ref.resourceGroup+"/providers/Microsoft.Compute/virtualMachines/"+ref.name) {
		return nil, fmt.Errorf("azuremsi: getting virtual machine %s: Resource Manager answered with resource %q", ref, deref(vm.ID))
	}
	return vm, nil
}

// selectorValues returns SPIRE's selector values for vm, sorted and without
// duplicates:
//
//	subscription-id:<subscription>
//	vm-name:<resource group>:<name>
//	network-security-group:<resource group>:<name>                  (of each interface)
//	virtual-network:<resource group>:<virtual network>              (of each IP configuration's subnet)
//	virtual-network-subnet:<resource group>:<virtual network>:<subnet>
//
// Resource groups and names come from the resource IDs Resource Manager
// returns, as in SPIRE.
func (c *armClients) selectorValues(ctx context.Context, subscription string, vm *armcompute.VirtualMachine) ([]string, error) {
	m := reVirtualMachineID.FindStringSubmatch(deref(vm.ID))
	if m == nil {
		return nil, fmt.Errorf("azuremsi: malformed virtual machine ID %q", deref(vm.ID))
	}
	values := []string{"subscription-id:" + subscription, "vm-name:" + m[1] + ":" + m[2]}
	var refs []*armcompute.NetworkInterfaceReference
	if vm.Properties != nil && vm.Properties.NetworkProfile != nil {
		refs = vm.Properties.NetworkProfile.NetworkInterfaces
	}
	if len(refs) > maxInterfaces {
		return nil, fmt.Errorf("azuremsi: virtual machine %s has %d network interfaces, at most %d are read", deref(vm.ID), len(refs), maxInterfaces)
	}
	for _, ref := range refs {
		if ref == nil || ref.ID == nil {
			continue
		}
		n := reNetworkInterfaceID.FindStringSubmatch(*ref.ID)
		if n == nil {
			return nil, fmt.Errorf("azuremsi: malformed network interface ID %q", *ref.ID)
		}
		resp, err := c.nics.Get(ctx, n[1], n[2], nil)
		if err != nil {
			return nil, fmt.Errorf("azuremsi: getting network interface %s:%s: %w", n[1], n[2], err)
		}
		more, err := interfaceSelectorValues(&resp.Interface)
		if err != nil {
			return nil, err
		}
		values = append(values, more...)
	}
	slices.Sort(values)
	return slices.Compact(values), nil
}

func interfaceSelectorValues(nic *armnetwork.Interface) ([]string, error) {
	if nic.Properties == nil {
		return nil, nil
	}
	var values []string
	if nsg := nic.Properties.NetworkSecurityGroup; nsg != nil && nsg.ID != nil {
		m := reNetworkSecurityGroupID.FindStringSubmatch(*nsg.ID)
		if m == nil {
			return nil, fmt.Errorf("azuremsi: malformed network security group ID %q", *nsg.ID)
		}
		values = append(values, "network-security-group:"+m[1]+":"+m[2])
	}
	for _, ipc := range nic.Properties.IPConfigurations {
		if ipc == nil || ipc.Properties == nil || ipc.Properties.Subnet == nil || ipc.Properties.Subnet.ID == nil {
			continue
		}
		id := *ipc.Properties.Subnet.ID
		m := reVirtualNetworkSubnetID.FindStringSubmatch(id)
		if m == nil {
			return nil, fmt.Errorf("azuremsi: malformed virtual network subnet ID %q", id)
		}
		values = append(values, "virtual-network:"+m[1]+":"+m[2], "virtual-network-subnet:"+m[1]+":"+m[2]+":"+m[3])
	}
	return values, nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
