// The service table and the listeners planned from it: each enabled service on its listener
// exactly once (its own port when its option names one, else the main port), disabled ones on
// none, and the main port first.
#include "server/service_table.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace lipsync::server {
namespace {

using Layout = std::map<std::string, std::vector<std::string>>;  // address -> service names

Layout LayoutOf(const std::vector<ListenerPlan>& plan) {
  Layout out;
  for (const ListenerPlan& listener : plan) {
    EXPECT_EQ(out.count(listener.address), 0u) << listener.address << " planned twice";
    auto& names = out[listener.address];
    for (const ServiceEntry* entry : listener.services) names.push_back(entry->name);
  }
  return out;
}

TEST(ServiceTable, NamesAreUniqueAndComplete) {
  std::set<std::string> names;
  for (const ServiceEntry& entry : ServiceTable()) {
    EXPECT_TRUE(names.insert(entry.name).second) << entry.name << " twice";
    EXPECT_TRUE(entry.enabled != nullptr) << entry.name;
    EXPECT_TRUE(entry.build != nullptr) << entry.name;
  }
  EXPECT_EQ(names, (std::set<std::string>{"lipsync.v1", "kserve", "sessions", "monolithic",
                                          "lipsyncsrv"}));
}

TEST(ServiceTable, EachEnabledServiceOnItsListenerOnce) {
  ServerOptions options;
  options.listen = "main:1";
  struct Case {
    const char* what;
    ServiceInputs inputs;
    bool monolithic, lipsyncsrv;
    std::string monolithic_listen, lipsyncsrv_listen;
    Layout expected;
  };
  const std::vector<Case> cases = {
      {"model only", {true, false}, false, false, "", "", {{"main:1", {"lipsync.v1", "kserve"}}}},
      {"model only, compatibility asked but no avatars",
       {true, false},
       true,
       true,
       "mono:2",
       "srv:3",
       {{"main:1", {"lipsync.v1", "kserve"}}}},
      {"model and avatars",
       {true, true},
       false,
       false,
       "mono:2",
       "",
       {{"main:1", {"lipsync.v1", "kserve", "sessions"}}}},
      {"everything on the main port",
       {true, true},
       true,
       true,
       "",
       "",
       {{"main:1", {"lipsync.v1", "kserve", "sessions", "monolithic", "lipsyncsrv"}}}},
      {"own ports",
       {true, true},
       true,
       true,
       "mono:2",
       "srv:3",
       {{"main:1", {"lipsync.v1", "kserve", "sessions"}},
        {"mono:2", {"monolithic"}},
        {"srv:3", {"lipsyncsrv"}}}},
      {"avatars only, lipsyncsrv on its own port",
       {false, true},
       true,
       true,
       "",
       "srv:3",
       {{"main:1", {"sessions", "monolithic"}}, {"srv:3", {"lipsyncsrv"}}}},
  };
  for (const Case& c : cases) {
    options.monolithic = c.monolithic;
    options.lipsyncsrv = c.lipsyncsrv;
    options.monolithic_listen = c.monolithic_listen;
    options.lipsyncsrv_listen = c.lipsyncsrv_listen;
    const auto plan = PlanListeners(options, c.inputs);
    ASSERT_FALSE(plan.empty()) << c.what;
    EXPECT_EQ(plan[0].address, "main:1") << c.what;
    EXPECT_EQ(LayoutOf(plan), c.expected) << c.what;
    for (const ServiceEntry& entry : ServiceTable()) {
      int count = 0;
      for (const auto& listener : plan) {
        for (const ServiceEntry* on : listener.services) {
          if (on == &entry) ++count;
        }
      }
      EXPECT_EQ(count, entry.enabled(options, c.inputs) ? 1 : 0) << c.what << ": " << entry.name;
    }
  }
}

}  // namespace
}  // namespace lipsync::server
