package rabbitmq

import (
	"net"
	"sync"
)

// corkConn is the publishing connection's socket. amqp091-go writes and
// flushes every message it publishes on its own, a system call per
// message; while a publish call sends its messages the socket is corked:
// writes collect in memory and go out together when the call has sent
// them all (or corkMax bytes have collected). Uncorked, writes pass
// straight through. Frames keep their order: every write, and the write
// of what collected, is made under one lock.
type corkConn struct {
	net.Conn

	mu    sync.Mutex
	corks int
	buf   []byte
	err   error // the write of what collected failed: the connection is done
	// writes counts the socket's write calls (tests).
	writes int
}

// corkMax bounds what a corked socket holds before it writes anyway.
const corkMax = 256 << 10

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.corks == 0 {
		c.writes++
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) >= corkMax {
		c.writeOutLocked()
		if c.err != nil {
			return 0, c.err
		}
	}
	return len(p), nil
}

// cork holds writes until the matching uncork; corks nest (publishers
// on several channels of the connection).
func (c *corkConn) cork() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.corks++
	c.mu.Unlock()
}

// uncork writes what collected once the last cork is gone.
func (c *corkConn) uncork() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corks--
	if c.corks == 0 {
		c.writeOutLocked()
	}
}

func (c *corkConn) writeOutLocked() {
	if len(c.buf) == 0 || c.err != nil {
		return
	}
	c.writes++
	_, err := c.Conn.Write(c.buf)
	if err != nil {
		// amqp091 believed these frames written. Closing the socket
		// makes its reader fail, which closes the connection and fails
		// every unconfirmed publish.
		c.err = err
		_ = c.Conn.Close()
	}
	if cap(c.buf) > corkMax*2 {
		c.buf = nil
	} else {
		c.buf = c.buf[:0]
	}
}
