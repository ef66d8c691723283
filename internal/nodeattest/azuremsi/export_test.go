package azuremsi

import "context"

// VerifyPayload exposes the payload parser and token verification (no
// Resource Manager call) to the package's tests, the fuzz target in
// particular. It returns the verified tenant and principal.
func (a *Attestor) VerifyPayload(ctx context.Context, payload []byte) (tenant, principal string, err error) {
	t, c, err := a.verify(ctx, payload)
	if err != nil {
		return "", "", err
	}
	return t.id, c.PrincipalID, nil
}

// KeyFetches is how many times the key set of tenant was fetched.
func (a *Attestor) KeyFetches(tenant string) int { return a.tenants[tenant].keys.fetched() }
