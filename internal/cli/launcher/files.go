package launcher

import (
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
		for _, s := range f.Servers {
			for _, at := range [][2]string{{"state_dir", s.StateDir}, {"admin_socket", s.AdminSocket}} {
				attr, p := at[0], at[1]
				if prev, ok := paths[p]; ok && prev.f != f {
					return fmt.Errorf("launcher: server %q of %s and server %q of %s share %s %s; set another %s in one of them",
						prev.s.Name, prev.f.Path, s.Name, f.Path, attr, p, attr)
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
							prev.s.Name, prev.f.Path, prev.attr, s.Name, f.Path, u.attr, addrOf(u))
					}
				}
			}
			addrs = append(addrs, here...)
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
// server of that name when only one file declares it.
func resolveTier(files []*topology.File, name string) (*topology.File, *topology.Server, error) {
	if td, server, ok := strings.Cut(name, "/"); ok {
		var tds []string
		for _, f := range files {
			if f.TrustDomain.Name() == td {
				s, err := f.Server(server)
				if err != nil {
					return nil, nil, fmt.Errorf("no server %q in trust domain %s (%s)", server, td, f.Path)
				}
				return f, s, nil
			}
			tds = append(tds, f.TrustDomain.Name())
		}
		return nil, nil, fmt.Errorf("no trust domain %q among the files (%s)", td, strings.Join(tds, ", "))
	}
	var found []*topology.File
	var match *topology.Server
	for _, f := range files {
		if s, err := f.Server(name); err == nil {
			found, match = append(found, f), s
		}
	}
	switch len(found) {
	case 0:
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
