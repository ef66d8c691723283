// Package workloadattestor is the home of the agent's workload attestors: each
// subpackage turns the process ID of a Workload API caller into the selectors
// (unix:uid:1000, ...) that registration entries are matched against. Every
// attestor has the same shape, so the agent can hold a list of them and add
// docker or k8s attestors later without changing its Workload API:
//
//	Attest(ctx context.Context, pid int32) ([]selector.Selector, error)
//
// The interface itself is declared where it is used, in the agent.
package workloadattestor
