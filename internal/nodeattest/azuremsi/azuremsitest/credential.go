package azuremsitest

import (
	"context"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// StaticCredential is an azcore.TokenCredential that always returns Token:
// the Resource Manager clients' credential in tests. Use it as
// azuremsi.TenantConfig.Credential.
type StaticCredential struct{ Token string }

var _ azcore.TokenCredential = StaticCredential{}

// GetToken returns the token, valid for an hour.
func (c StaticCredential) GetToken(context.Context, policy.TokenRequestOptions) (azcore.AccessToken, error) {
	return azcore.AccessToken{Token: c.Token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}
