package launcher

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/arborid/arbor/topology"
)

// checkFiles refuses topology files that cannot run side by side, each in
// one readable line: two files of the same trust domain, or servers of
// different files sharing a state directory, an admin socket or a listen
// address. (Within one file, topology validation already says so.)
func checkFiles(files []*topology.File) error {
	for i, f := range files {
		for _, g := range files[:i] {
			if f.TrustDomain == g.TrustDomain {
				return fmt.Errorf("launcher: %s and %s both declare trust domain %s; give arbor up one file per trust domain", g.Path, f.Path, f.TrustDomain)
			}
		}
	}
	type use struct {
		f    *topology.File
		s    *topology.Server
		attr string
	}
	paths := map[string]use{}
	var addrs []use
	addrOf := func(u use) string {
		switch u.attr {
		case "listen":
			return u.s.Listen
		case "health_listen":
			return u.s.HealthListen
		case "bundle_endpoint listen":
			return u.s.BundleEndpoint.Listen
		case "oidc_discovery listen":
			return u.s.OIDCDiscovery.Listen
		}
		return ""
	}
	for _, f := range files {
		var servers []*topology.Server
		for _, s := range f.Servers {
			servers = append(servers, s.ReplicaList()...)
		}
		for _, s := range servers {
			for _, at := range [][2]string{{"state_dir", s.StateDir}, {"admin_socket", s.AdminSocket}} {
				attr, p := at[0], at[1]
				if prev, ok := paths[p]; ok && prev.f != f {
					return fmt.Errorf("launcher: server %q of %s and server %q of %s share %s %s; set another %s in one of them",
						prev.s.Node(), prev.f.Path, s.Node(), f.Path, attr, p, attr)
				}
				paths[p] = use{f, s, attr}
			}
			here := []use{{f, s, "listen"}}
			if s.HealthListen != "" {
				here = append(here, use{f, s, "health_listen"})
			}
			if s.BundleEndpoint != nil {
				here = append(here, use{f, s, "bundle_endpoint listen"})
			}
			if s.OIDCDiscovery != nil {
				here = append(here, use{f, s, "oidc_discovery listen"})
			}
			for _, u := range here {
				for _, prev := range addrs {
					if prev.f != f && sameListener(addrOf(prev), addrOf(u)) {
						return fmt.Errorf("launcher: server %q of %s (%s) and server %q of %s (%s) both listen on %s; change one of them",
							prev.s.Node(), prev.f.Path, prev.attr, s.Node(), f.Path, u.attr, addrOf(u))
					}
				}
			}
			addrs = append(addrs, here...)
		}
	}
	return nil
}

// checkReplicas refuses, in one line, a server block with replicas that
// arbor up cannot run: its replicas must share one PostgreSQL database
// (on SQLite each would be a tier of its own, unknown to the others).
func checkReplicas(files []*topology.File) error {
	for _, f := range files {
		for _, s := range f.Servers {
			if s.Replicas > 1 && s.Datastore.Kind != topology.DatastorePostgres {
				return fmt.Errorf("launcher: server %q of %s has replicas = %d on %s, but replicas need one PostgreSQL database they share: "+
					"set datastore \"postgres\" { dsn = env(\"ARBOR_POSTGRES_DSN\") } in server %[1]q and export ARBOR_POSTGRES_DSN, or remove replicas",
					s.Name, f.Path, s.Replicas, s.Datastore.Kind)
			}
		}
	}
	return nil
}

// sameListener reports whether two listen addresses on this machine would
// take the same port: the same port on the same host, or on any host when
// one of them listens on every interface.
func sameListener(a, b string) bool {
	ha, pa, erra := net.SplitHostPort(a)
	hb, pb, errb := net.SplitHostPort(b)
	if erra != nil || errb != nil {
		return a == b
	}
	if pa != pb || pa == "0" {
		return false
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return ha == hb || wildcard(ha) || wildcard(hb)
}

// resolveTier finds the server a --stop/--start NAME means among the files:
// "TD/NAME" names the server NAME of trust domain TD, a plain NAME the one
// server of that name when only one file declares it; NAME may be NAME/K,
// replica K of the block (topology.File.Replica).
func resolveTier(files []*topology.File, name string) (*topology.File, *topology.Server, error) {
	var tds []string
	for _, f := range files {
		td := f.TrustDomain.Name()
		tds = append(tds, td)
		if node, ok := strings.CutPrefix(name, td+"/"); ok {
			s, err := f.Replica(node)
			switch {
			case errors.Is(err, topology.ErrUnknownReplica):
				return nil, nil, fmt.Errorf("trust domain %s (%s): %v", td, f.Path, err)
			case err != nil:
				block, _, _ := strings.Cut(node, "/")
				return nil, nil, fmt.Errorf("no server %q in trust domain %s (%s)", block, td, f.Path)
			}
			return f, s, nil
		}
	}
	var found []*topology.File
	var match *topology.Server
	var replicaErr error
	for _, f := range files {
		s, err := f.Replica(name)
		switch {
		case err == nil:
			found, match = append(found, f), s
		case errors.Is(err, topology.ErrUnknownReplica):
			// The block exists, the replica does not (else the name may be
			// TD/NAME of a trust domain not among the files).
			if block, _, _ := strings.Cut(name, "/"); slices.ContainsFunc(f.Servers, func(s *topology.Server) bool { return s.Name == block }) {
				replicaErr = err
			}
		}
	}
	switch len(found) {
	case 0:
		if replicaErr != nil {
			return nil, nil, replicaErr
		}
		if td, _, ok := strings.Cut(name, "/"); ok && len(files) > 1 {
			return nil, nil, fmt.Errorf("no trust domain %q among the files (%s)", td, strings.Join(tds, ", "))
		}
		if len(files) == 1 {
			return nil, nil, fmt.Errorf("no server %q in %s", name, files[0].Path)
		}
		return nil, nil, fmt.Errorf("no server %q in any of the files", name)
	case 1:
		return found[0], match, nil
	}
	var spelled []string
	for _, f := range found {
		spelled = append(spelled, f.TrustDomain.Name()+"/"+name)
	}
	slices.Sort(spelled)
	return nil, nil, fmt.Errorf("%d files declare a server %q: say which with %s", len(found), name, strings.Join(spelled, " or "))
}
