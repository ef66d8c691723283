package awsiid

// InstanceIdentityDocument is the parsed document, for the tests.
type InstanceIdentityDocument = identityDocument

// VerifyPayload exposes the payload parser and signature check to the
// package's tests (the fuzz target in particular).
func (a *Attestor) VerifyPayload(payload []byte) (InstanceIdentityDocument, []byte, error) {
	vd, err := verifyPayload(payload, a.anchors)
	if err != nil {
		return InstanceIdentityDocument{}, nil, err
	}
	return vd.doc, vd.raw, nil
}

// ClientsBuilt is how many SDK client sets the attestor has built.
func (a *Attestor) ClientsBuilt() int { return a.clients.builtCount() }
