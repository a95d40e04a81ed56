//! Integration tests against the real server, a real PostgreSQL and a real GridFS store.
//! One binary (only `mod` lines here) so it builds once.

mod accounts;
mod backup;
mod calendar;
mod cli;
mod clips;
mod drill;
mod events;
mod faults;
mod flash;
mod frames;
mod health;
mod helpers;
mod hostile;
mod images;
mod joins;
mod live;
mod locating;
mod metrics;
mod nodes;
mod phone;
mod realtime;
mod scenes;
mod sound;
