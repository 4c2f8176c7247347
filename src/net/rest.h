// The REST routes of DESIGN §1 on chat::Rooms: GET /chat/rooms, GET /chat/room/{id},
// POST /chat/room. Each answers through its Responder, from whatever thread the rooms
// answer on.
#pragma once

#include <boost/url/url_view.hpp>

#include "chat/limits.h"
#include "chat/rooms.h"
#include "net/http.h"
#include "net/limits.h"

namespace chatd::net {

// One page of rooms in creation order: ?offset=K (default 0) and ?limit=N (default and at most
// net::Limits::room_list_max). X-Total-Count says how many there are; Link rel="next" names the next
// page while there is one. The body stays the seed's plain array; each entry also carries
// "memberCount" while presence is on and its engine answers.
//
// `who` (--auth jwt; null with --auth none) is the caller: the list holds only rooms it may
// enter (chat::may_enter), and a restricted room it may not enter is 403 everywhere.
void list_rooms(chat::Rooms& rooms, const Limits& limits, const boost::urls::url_view& url, ResponderPtr r,
                chat::IdentityPtr who);
// `id` as it came in the path; anything but a room id is a 404.
void find_room(chat::Rooms& rooms, std::string_view id, ResponderPtr r, chat::IdentityPtr who);
// The name comes from the query (`url`), a form body, or a JSON body {"name": ...}. With
// `members` (comma-separated, or a JSON array of token subs) or `restricted=true` the room is
// restricted (needs --auth jwt): the caller is always a member.
void create_room(chat::Rooms& rooms, const chat::Limits& limits, const boost::urls::url_view& url, ResponderPtr r,
                 chat::IdentityPtr who);
// GET /chat/room/{id}/messages?before=SEQ&limit=N: a JSON array of the newest N (default 50, at
// most chat::Limits::max_replay) retained messages below SEQ, ascending, shaped as live bodies;
// headers x-epoch, x-first-seq, x-last-seq.
void room_messages(chat::Rooms& rooms, const chat::Limits& limits, std::string_view id, const boost::urls::url_view& url,
                   ResponderPtr r, chat::IdentityPtr who);

// GET /chat/room/{id}/members: {"roomId","count","members":[names…]} — who is in the room on
// every node; members holds at most Limits::max_member_list names, count is exact. 404 for an
// unknown room or when presence is off; 503 when the presence engine does not answer.
// `who` (--auth jwt): a restricted room it may not enter is 403.
void room_members(chat::Rooms& rooms, std::string_view id, ResponderPtr r, chat::IdentityPtr who);

// The JSON body of a members answer.
std::string members_json(std::string_view room_id, const bus::MemberList& l);

}  // namespace chatd::net
