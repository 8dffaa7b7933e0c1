package rabbitmq

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald/broker"
)

// conn is one AMQP connection that redials itself. Users take the current
// connection with get, open channels on it, and come back to get when their
// channel dies; get blocks while the connection is down.
type conn struct {
	url  string
	cfg  amqp.Config
	log  *slog.Logger
	name string
	// corked connections hold a publish call's writes for one system
	// call (see corkConn).
	corked bool

	mu     sync.Mutex
	c      *amqp.Connection // nil while down
	cc     *corkConn        // c's socket, when corked
	up     chan struct{}    // closed iff c != nil
	closed bool

	done chan struct{}
	wg   sync.WaitGroup
}

// dialConn connects once (so a wrong URL or an unreachable broker is an
// error from New) and then keeps the connection up until close.
func dialConn(url string, cfg amqp.Config, name string, corked bool, log *slog.Logger) (*conn, error) {
	c := &conn{url: url, cfg: cfg, log: log, name: name, corked: corked, up: make(chan struct{}), done: make(chan struct{})}
	ac, cc, err := c.dial()
	if err != nil {
		return nil, err
	}
	c.install(ac, cc)
	c.wg.Go(c.supervise)
	return c, nil
}

func (c *conn) dial() (*amqp.Connection, *corkConn, error) {
	cfg := c.cfg
	cfg.Properties = amqp.Table{"connection_name": c.name}
	for k, v := range c.cfg.Properties {
		cfg.Properties[k] = v
	}
	var cc *corkConn
	if c.corked && cfg.Dial != nil {
		dial := cfg.Dial
		cfg.Dial = func(network, addr string) (net.Conn, error) {
			nc, err := dial(network, addr)
			if err != nil {
				return nil, err
			}
			cc = &corkConn{Conn: nc}
			return cc, nil
		}
	}
	ac, err := amqp.DialConfig(c.url, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: rabbitmq: dial %s: %w", broker.ErrUnavailable, redact(c.url), err)
	}
	return ac, cc, nil
}

// corker returns the current connection's socket if it is corked, or
// nil (whose cork and uncork do nothing).
func (c *conn) corker() *corkConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cc
}

func (c *conn) install(ac *amqp.Connection, cc *corkConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.c, c.cc = ac, cc
	close(c.up)
}

// markDown forgets ac if it is still the current connection.
func (c *conn) markDown(ac *amqp.Connection) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c == ac && ac != nil {
		c.c, c.cc = nil, nil
		c.up = make(chan struct{})
	}
}

// supervise waits for the connection to close and redials with backoff.
func (c *conn) supervise() {
	for {
		c.mu.Lock()
		ac := c.c
		c.mu.Unlock()
		if ac != nil {
			closes := ac.NotifyClose(make(chan *amqp.Error, 1))
			select {
			case <-c.done:
				_ = ac.Close()
				return
			case err := <-closes:
				c.log.Warn("rabbitmq connection lost", "connection", c.name, "err", err)
			}
			c.markDown(ac)
		}
		backoff := 50 * time.Millisecond
		for {
			ac, cc, err := c.dial()
			if err == nil {
				c.install(ac, cc)
				c.log.Info("rabbitmq connection restored", "connection", c.name)
				break
			}
			t := time.NewTimer(backoff)
			select {
			case <-c.done:
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(backoff*2, 2*time.Second)
		}
	}
}

// get returns the current connection, waiting while it is down.
func (c *conn) get(ctx context.Context) (*amqp.Connection, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, broker.ErrClosed
		}
		if c.c != nil && c.c.IsClosed() {
			c.c = nil
			c.up = make(chan struct{})
		}
		if c.c != nil {
			ac := c.c
			c.mu.Unlock()
			return ac, nil
		}
		up := c.up
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: rabbitmq: waiting for connection %s: %w", broker.ErrUnavailable, c.name, ctx.Err())
		case <-c.done:
			return nil, broker.ErrClosed
		case <-up:
		}
	}
}

// channel opens a channel on the current connection, waiting while it is
// down.
func (c *conn) channel(ctx context.Context) (*amqp.Channel, error) {
	for {
		ac, err := c.get(ctx)
		if err != nil {
			return nil, err
		}
		ch, err := ac.Channel()
		if err == nil {
			return ch, nil
		}
		if !ac.IsClosed() {
			return nil, fmt.Errorf("%w: rabbitmq: open channel: %w", broker.ErrUnavailable, err)
		}
		c.markDown(ac)
	}
}

func (c *conn) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	close(c.done)
	c.mu.Unlock()
	c.wg.Wait()
	c.mu.Lock()
	if c.c != nil {
		_ = c.c.Close()
	}
	c.mu.Unlock()
}

// redact hides the password of an AMQP URL for errors and logs.
func redact(url string) string {
	u, err := amqp.ParseURI(url)
	if err != nil {
		return "(invalid url)"
	}
	return u.Scheme + "://" + u.Username + "@" + u.Host + fmt.Sprintf(":%d/", u.Port) + u.Vhost
}
