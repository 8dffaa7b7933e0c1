package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// ServerInfoSubject is where a Herald server (herald serve) tells the
// clients that reach it over the network what they cannot see from the
// NATS protocol: the durability of its JetStream store. A client of a
// Sync server group-commits its publishes (WithGroupCommit), as one of an
// embedded Sync server does, so "acknowledged means on disk" does not cost
// an fsync per message. A plain NATS server has no responder there.
const ServerInfoSubject = "$HERALD.SERVER.INFO"

// serverInfoWait bounds the question; a plain NATS server answers "no
// responders" at once.
const serverInfoWait = time.Second

// ServerInfo is the answer on ServerInfoSubject.
type ServerInfo struct {
	Durability Durability `json:"durability"`
}

// AnswerServerInfo answers the requests on ServerInfoSubject with info
// until the subscription is unsubscribed.
func AnswerServerInfo(nc *nats.Conn, info ServerInfo) (*nats.Subscription, error) {
	body, err := json.Marshal(info)
	if err != nil {
		return nil, err
	}
	sub, err := nc.Subscribe(ServerInfoSubject, func(m *nats.Msg) {
		if m.Reply != "" {
			_ = m.Respond(body)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("natsjs: answer %s: %w", ServerInfoSubject, err)
	}
	return sub, nil
}

// askServerInfo asks the server nc is connected to what it is. ok is
// false if it is not a Herald server, or did not answer in time, or its
// answer is not understood.
func askServerInfo(ctx context.Context, nc *nats.Conn) (info ServerInfo, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, serverInfoWait)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, ServerInfoSubject, nil)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return ServerInfo{}, false, nil
	case err != nil:
		return ServerInfo{}, false, err
	}
	if json.Unmarshal(m.Data, &info) != nil {
		return ServerInfo{}, false, fmt.Errorf("unreadable answer %q", m.Data)
	}
	return info, true, nil
}
